//! Network namespaces for end-to-end tests: a few lines build a "pod" and its peers.
//!
//! - [`Netns::create`] makes a namespace with `lo` up and removes it on drop, even when the test
//!   panics.
//! - [`veth`] joins two namespaces with addresses of the test's choosing. They are private
//!   addresses, and they exist only inside those namespaces.
//! - [`Netns::run`] runs a closure on a thread that has entered the namespace, so a test can
//!   connect or listen "from inside" with plain std sockets.
//! - [`Netns::command`] starts a process inside it, optionally as another uid
//!   ([`Netns::command_as`]), the way the proxy runs as 1337.
//! - [`Netns::listen`] and [`connect_in`] give async code sockets that live in a namespace (a
//!   socket stays in the namespace it was created in), so one test can talk into several.
//!
//! These need root. Use [`crate::prereq::require`] with [`crate::prereq::is_root`] first.

use nix::sched::{CloneFlags, setns};
use std::fs::File;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace that is deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `tern-<tag>-<pid>-<n>` with loopback up.
    pub fn create(tag: &str) -> anyhow::Result<Netns> {
        let name = format!(
            "tern-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// A command that runs inside the namespace as `uid`/`gid` (and no supplementary groups).
    pub fn command_as(&self, uid: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = self.command("setpriv");
        cmd.args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
        ])
        .arg(program);
        cmd
    }

    /// Runs `f` on a thread that has entered this namespace and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A TCP listener on `address` inside this namespace, for tokio (call within a runtime).
    pub fn listen(&self, address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let listener = in_namespace(&self.name, || std::net::TcpListener::bind(address))??;
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    }

    /// Starts `f` on a detached thread inside this namespace (for servers that run for the test).
    pub fn spawn<F: FnOnce() + Send + 'static>(&self, f: F) -> std::thread::JoinHandle<()> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `f` on a thread that entered namespace `name` (a thread's namespace is its own, so the
/// caller's stays as it was).
fn in_namespace<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(&File::open(&path)?, CloneFlags::CLONE_NEWNET)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Connects to `address` inside namespace `name` (the socket is made there, the connect is async).
pub async fn connect_in(name: &str, address: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let domain = socket2::Domain::for_address(address);
    let socket = in_namespace(name, || {
        socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
    })??;
    socket.set_nonblocking(true)?;
    tokio::net::TcpSocket::from_std_stream(socket.into())
        .connect(address)
        .await
}

/// Joins `a` and `b` with a veth pair; `a_addr`/`b_addr` are CIDRs such as `10.250.1.1/24`
/// (IPv6 addresses are added with `nodad` so they are usable at once). Returns the interface
/// names in `a` and in `b`, for routes.
pub fn veth(
    a: &Netns,
    a_addr: &[&str],
    b: &Netns,
    b_addr: &[&str],
) -> anyhow::Result<(String, String)> {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let (a_if, b_if) = (
        format!("tva{}x{n}", std::process::id() % 10000),
        format!("tvb{}x{n}", std::process::id() % 10000),
    );
    ip(&[
        "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
        &b.name,
    ])?;
    for (ns, dev, addrs) in [(a, &a_if, a_addr), (b, &b_if, b_addr)] {
        for addr in addrs {
            if addr.contains(':') {
                ns.ip(&["-6", "addr", "add", addr, "dev", dev, "nodad"])?;
            } else {
                ns.ip(&["addr", "add", addr, "dev", dev])?;
            }
        }
        ns.ip(&["link", "set", dev, "up"])?;
    }
    Ok((a_if, b_if))
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A child process killed (and reaped) on drop, so a failing test leaves nothing behind.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a one-shot-per-connection TCP server on `address` in `ns`: every connection gets
/// `reply(peer)` and is closed. Returns once the socket is listening.
pub fn serve_in<F>(ns: &Netns, address: std::net::SocketAddr, reply: F)
where
    F: Fn(std::net::SocketAddr) -> String + Send + 'static,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    ns.spawn(move || {
        let listener = match std::net::TcpListener::bind(address) {
            Ok(l) => {
                let _ = ready_tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return;
            }
        };
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let peer = stream.peer_addr().unwrap_or(address);
            let _ = std::io::Write::write_all(&mut stream, reply(peer).as_bytes());
        }
    });
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("bind {address} in {}: {e}", ns.name),
        Err(_) => panic!("server thread for {address} died"),
    }
}

/// Connects to `address` from inside `ns` and returns everything received until close.
pub fn fetch_in(ns: &Netns, address: std::net::SocketAddr) -> std::io::Result<String> {
    ns.run(|| {
        let mut stream =
            std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(5))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stream, &mut out)?;
        Ok(out)
    })
}

/// A plain HTTP/1.0 GET from inside `ns`; returns (status, body).
pub fn http_get_in(
    ns: &Netns,
    address: std::net::SocketAddr,
    path: &str,
) -> std::io::Result<(u16, String)> {
    ns.run(|| {
        let mut stream =
            std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(5))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        std::io::Write::write_all(
            &mut stream,
            format!("GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").as_bytes(),
        )?;
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stream, &mut out)?;
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    })
}
