//! The self-contained sidecar image that `scripts/build-image.sh` writes as an OCI image layout:
//! the layout is valid (every digest and size matches its blob, media types, index -> manifest ->
//! config -> layer), the config runs `tern` as 1337:1337 from `/`, the one layer holds exactly the
//! intended file system with a static `tern` at `/usr/local/bin/tern` and `envoy` beside it. Run
//! chrooted into the layer alone as 1337 (as root), the binary validates Istio's rendered bootstrap
//! and serves: ready, a STRICT_DNS host found in /etc/hosts, a request through a worker. Two builds
//! of one binary are byte-identical, and `umoci` unpacks the image as an independent reader.
//!
//! The image is built once per test binary, from a static build in `<target>/image` that later
//! runs reuse (see [`image`] for the profile).

use flate2::read::GzDecoder;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use tern_tests::bootstrap::{HttpBootstrap, route_all};
use tern_tests::http_backend::{HttpBackend, http_request};
use tern_tests::prereq::{in_ci, is_root, require};
use tokio::time::Instant;

/// The reference name the test asks for.
const TAG: &str = "sidecar-image-test";
/// Fixed build time, so two builds of one binary are byte-identical.
const EPOCH: &str = "1700000000";
const CREATED: &str = "2023-11-14T22:13:20Z";

const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// How long the chrooted proxy may take to start, resolve and serve.
const DEADLINE: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-image-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `scripts/build-image.sh` with `args`; returns the layout directory it printed.
fn run_build_script(out: &Path, args: &[&str]) -> PathBuf {
    let output = Command::new("bash")
        .arg(repo_root().join("scripts/build-image.sh"))
        .env("CARGO_TARGET_DIR", target_dir())
        .arg("--out")
        .arg(out)
        .args(["--tag", TAG])
        .args(args)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .expect("running scripts/build-image.sh");
    assert!(
        output.status.success(),
        "build-image.sh failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).expect("UTF-8 stdout");
    assert_eq!(printed.trim_end(), out.to_str().expect("UTF-8 path"));
    out.to_path_buf()
}

/// The layout built once for all tests here and read back, or `None` when `file` is missing
/// (skip/fail). The binary is built with the cargo profile `TERN_IMAGE_PROFILE` (default `dev`:
/// the same script and flags as a release image at a third of the compile time of a first build).
fn image() -> Option<&'static (PathBuf, Image)> {
    static IMAGE: OnceLock<(PathBuf, Image)> = OnceLock::new();
    if !require(
        have("file"),
        "`file` (scripts/install-test-deps.sh installs it)",
    ) {
        return None;
    }
    Some(IMAGE.get_or_init(|| {
        let profile = std::env::var("TERN_IMAGE_PROFILE").unwrap_or_else(|_| "dev".to_string());
        let layout = run_build_script(
            &target_dir().join("image/test-oci"),
            &["--profile", &profile],
        );
        let image = load(&layout);
        (layout, image)
    }))
}

/// The target directory this test binary was built in (`<target>/<profile>/deps/<test>`); the
/// image it builds stays there, replaced by the next run.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    exe.ancestors()
        .nth(3)
        .expect("<target>/<profile>/deps/<test>")
        .to_path_buf()
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Reads the blob a descriptor names, checking its digest, size and media type.
fn blob(layout: &Path, descriptor: &Value, media_type: &str) -> Vec<u8> {
    assert_eq!(descriptor["mediaType"], media_type, "{descriptor}");
    let digest = descriptor["digest"].as_str().expect("digest is a string");
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{digest} is not a sha256 digest"));
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex))
        .unwrap_or_else(|e| panic!("blob {digest}: {e}"));
    assert_eq!(
        sha256_hex(&bytes),
        hex,
        "blob {digest} does not hash to its name"
    );
    assert_eq!(
        descriptor["size"].as_u64(),
        Some(bytes.len() as u64),
        "size of {digest}"
    );
    bytes
}

/// The layout's documents, each read through the descriptor that names it.
struct Image {
    index: Value,
    manifest: Value,
    config: Value,
    /// The layer, uncompressed.
    layer_tar: Vec<u8>,
}

fn load(layout: &Path) -> Image {
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("index.manifests");
    assert_eq!(manifests.len(), 1, "one image in the index: {index}");
    let manifest: Value = serde_json::from_slice(&blob(layout, &manifests[0], MANIFEST_TYPE))
        .expect("manifest is JSON");
    let config: Value = serde_json::from_slice(&blob(layout, &manifest["config"], CONFIG_TYPE))
        .expect("config is JSON");
    let layers = manifest["layers"].as_array().expect("manifest.layers");
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    let mut layer_tar = Vec::new();
    GzDecoder::new(&blob(layout, &layers[0], LAYER_TYPE)[..])
        .read_to_end(&mut layer_tar)
        .expect("the layer is gzip");
    Image {
        index,
        manifest,
        config,
        layer_tar,
    }
}

/// One entry of the layer tar, as the assertions compare it.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    owner: (u64, u64),
    link: Option<String>,
}

fn entry(kind: &'static str, mode: u32, owner: u64) -> Entry {
    Entry {
        kind,
        mode,
        owner: (owner, owner),
        link: None,
    }
}

/// The layer's entries by path, and the bytes of `usr/local/bin/tern`.
fn layer_entries(tar_bytes: &[u8]) -> (BTreeMap<String, Entry>, Vec<u8>) {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut entries = BTreeMap::new();
    let mut tern = Vec::new();
    for item in archive.entries().expect("tar entries") {
        let mut item = item.expect("tar entry");
        let header = item.header();
        let path = item
            .path()
            .expect("entry path")
            .to_string_lossy()
            .into_owned();
        let path = path.trim_end_matches('/').to_string();
        let kind = match header.entry_type() {
            tar::EntryType::Directory => "dir",
            tar::EntryType::Regular => "file",
            tar::EntryType::Symlink => "symlink",
            other => panic!("{path}: unexpected entry type {other:?}"),
        };
        let value = Entry {
            kind,
            mode: header.mode().expect("mode"),
            owner: (header.uid().expect("uid"), header.gid().expect("gid")),
            link: item
                .link_name()
                .expect("link name")
                .map(|l| l.to_string_lossy().into_owned()),
        };
        if path == "usr/local/bin/tern" {
            item.read_to_end(&mut tern).expect("tern bytes");
        }
        assert!(
            entries.insert(path.clone(), value).is_none(),
            "{path} twice"
        );
    }
    (entries, tern)
}

/// The program header types of an ELF64 little-endian executable.
fn elf_program_header_types(elf: &[u8]) -> Vec<u32> {
    assert_eq!(&elf[..4], b"\x7fELF", "an ELF file");
    assert_eq!((elf[4], elf[5]), (2, 1), "ELF64, little endian");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| {
            let at = phoff + i * phentsize;
            u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes"))
        })
        .collect()
}

const PT_INTERP: u32 = 3;

/// The layer alone unpacked into a scratch directory (owners kept when root): a root file system
/// with no libc, no loader and no /dev or /proc.
fn unpack_layer(image: &Image, name: &str) -> PathBuf {
    let rootfs = scratch_dir(name);
    let mut archive = tar::Archive::new(&image.layer_tar[..]);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(is_root());
    archive.unpack(&rootfs).expect("unpacking the layer");
    rootfs
}

/// `/usr/local/bin/envoy` of an unpacked layer, run chrooted into it as 1337:1337, with its
/// output in a file beside the root; killed and reaped on drop.
struct ChrootedProxy {
    child: Child,
    rootfs: PathBuf,
    log: PathBuf,
}

/// Where the chrooted proxy writes its admin address, inside the root.
const ADMIN_FILE: &str = "tmp/admin-address";

impl ChrootedProxy {
    fn spawn(rootfs: &Path, config: &str) -> ChrootedProxy {
        let log = rootfs.with_extension("log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new("chroot")
            .arg("--userspec=1337:1337")
            .arg(rootfs)
            .args(["/usr/local/bin/envoy", "-c", config, "--concurrency", "2"])
            .arg("--admin-address-path")
            .arg(Path::new("/").join(ADMIN_FILE))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawning chroot");
        ChrootedProxy {
            child,
            rootfs: rootfs.to_path_buf(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls (with a deadline) until `probe` yields a value, failing if the proxy exits first.
    async fn wait_for<T, F: Future<Output = Option<T>>>(
        &mut self,
        what: &str,
        mut probe: impl FnMut() -> F,
    ) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "the proxy exited ({status}) before {what}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {DEADLINE:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn admin_address(&mut self) -> SocketAddr {
        let file = self.rootfs.join(ADMIN_FILE);
        self.wait_for("admin address", || {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            std::future::ready(text.trim().parse::<SocketAddr>().ok())
        })
        .await
    }
}

impl Drop for ChrootedProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on `address`: status and body, or `None` if the request failed.
async fn get(address: SocketAddr, authority: &str, path: &str) -> Option<(u16, String)> {
    let response = http_request(address, "GET", authority, path, &[])
        .await
        .ok()?;
    Some((response.status, response.text()))
}

/// The bound address of the proxy's one listener, from `/listeners?format=json`.
async fn only_listener_address(admin: SocketAddr) -> SocketAddr {
    let (_, body) = get(admin, "admin", "/listeners?format=json")
        .await
        .expect("GET /listeners");
    let listeners: Value = serde_json::from_str(&body).expect("listeners JSON");
    let socket = &listeners["listener_statuses"][0]["local_address"]["socket_address"];
    let ip = socket["address"].as_str().expect("address").parse();
    let port = socket["port_value"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok());
    SocketAddr::new(ip.expect("IP"), port.expect("port"))
}

#[test]
fn image_layout_is_valid_oci_with_every_digest_matching() {
    let Some((layout, image)) = image() else {
        return;
    };
    assert_eq!(
        std::fs::read_to_string(layout.join("oci-layout")).expect("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    assert_eq!(image.index["schemaVersion"], 2);
    assert_eq!(image.index["mediaType"], INDEX_TYPE);
    let descriptor = &image.index["manifests"][0];
    assert_eq!(
        descriptor["annotations"]["org.opencontainers.image.ref.name"],
        TAG
    );
    assert_eq!(
        descriptor["platform"],
        serde_json::json!({"architecture": "amd64", "os": "linux"})
    );
    assert_eq!(image.manifest["schemaVersion"], 2);
    assert_eq!(image.manifest["mediaType"], MANIFEST_TYPE);
    // The config names the uncompressed layer.
    let diff_id = format!("sha256:{}", sha256_hex(&image.layer_tar));
    assert_eq!(
        image.config["rootfs"],
        serde_json::json!({"type": "layers", "diff_ids": [diff_id]})
    );
    // Nothing in blobs/ but the three blobs the chain names.
    let mut names: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .expect("blobs/sha256")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let mut named: Vec<String> = [
        &image.index["manifests"][0],
        &image.manifest["config"],
        &image.manifest["layers"][0],
    ]
    .iter()
    .map(|d| d["digest"].as_str().expect("digest")[7..].to_string())
    .collect();
    named.sort();
    assert_eq!(names, named);
}

#[test]
fn image_config_runs_tern_as_1337_from_root_dir() {
    let Some((_, image)) = image() else { return };
    let config = &image.config;
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["created"], CREATED);
    assert_eq!(
        config["config"],
        serde_json::json!({
            "User": "1337:1337",
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "Entrypoint": ["/usr/local/bin/tern"],
            "Cmd": ["-c", "/etc/istio/proxy/envoy-rev.json"],
            "WorkingDir": "/",
            "Labels": {
                "org.opencontainers.image.title": "tern",
                "org.opencontainers.image.version": tern::VERSION,
            },
        })
    );
}

#[test]
fn image_layer_holds_static_tern_at_envoy_path_and_proxy_dirs() {
    let Some((_, image)) = image() else { return };
    let (entries, tern) = layer_entries(&image.layer_tar);
    let mut expected = BTreeMap::from([
        ("etc", entry("dir", 0o755, 0)),
        ("etc/group", entry("file", 0o644, 0)),
        ("etc/istio", entry("dir", 0o755, 0)),
        ("etc/istio/proxy", entry("dir", 0o755, 1337)),
        ("etc/passwd", entry("file", 0o644, 0)),
        ("tmp", entry("dir", 0o1777, 0)),
        ("usr", entry("dir", 0o755, 0)),
        ("usr/local", entry("dir", 0o755, 0)),
        ("usr/local/bin", entry("dir", 0o755, 0)),
        ("usr/local/bin/tern", entry("file", 0o755, 0)),
        ("var", entry("dir", 0o755, 0)),
        ("var/lib", entry("dir", 0o755, 0)),
        ("var/lib/istio", entry("dir", 0o755, 0)),
        ("var/lib/istio/data", entry("dir", 0o755, 1337)),
    ]);
    expected.insert(
        "usr/local/bin/envoy",
        Entry {
            link: Some("tern".to_string()),
            ..entry("symlink", 0o777, 0)
        },
    );
    let expected: BTreeMap<String, Entry> = expected
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(entries, expected);

    // Static: no program interpreter, so it runs without a dynamic loader or libc in the image.
    let types = elf_program_header_types(&tern);
    assert!(!types.is_empty(), "program headers");
    assert!(
        !types.contains(&PT_INTERP),
        "tern asks for a dynamic loader"
    );
}

#[test]
fn image_binary_validates_istio_bootstrap_in_the_bare_layer() {
    let Some((_, image)) = image() else { return };
    let rootfs = unpack_layer(image, "validate");
    let bootstrap = rootfs.join("etc/istio/proxy/envoy-rev.json");
    std::fs::copy(
        repo_root().join("../shared/fixtures/istio/xds/default_golden.json"),
        &bootstrap,
    )
    .expect("Istio's default_golden.json");

    // As root: chroot into the layer alone, as 1337, the way the image config runs it.
    let (mut command, shown) = if is_root() {
        let mut command = Command::new("chroot");
        command
            .arg("--userspec=1337:1337")
            .arg(&rootfs)
            .arg("/usr/local/bin/envoy");
        (command, PathBuf::from("/etc/istio/proxy/envoy-rev.json"))
    } else {
        assert!(
            !in_ci(),
            "prerequisite missing under CI=true: root (chroot)"
        );
        eprintln!("not root: running the layer's binary outside a chroot");
        (Command::new(rootfs.join("usr/local/bin/envoy")), bootstrap)
    };
    let output = command
        .args(["--mode", "validate", "-c"])
        .arg(&shown)
        .output()
        .expect("running the layer's envoy");
    assert!(
        output.status.success(),
        "{}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("configuration '{}' OK\n", shown.display())
    );
    let _ = std::fs::remove_dir_all(&rootfs);
}

#[tokio::test]
async fn image_binary_serves_in_the_bare_layer_as_1337_and_resolves_through_etc_hosts() {
    let Some((_, image)) = image() else { return };
    if !require(is_root(), "root (to chroot into the layer)") {
        return;
    }
    let backend = HttpBackend::start("upstream").await.expect("backend");
    let rootfs = unpack_layer(image, "serve");
    // A STRICT_DNS cluster resolved by the system resolver: static glibc reads /etc/hosts itself.
    std::fs::write(rootfs.join("etc/hosts"), "127.0.0.1 upstream.test\n").expect("etc/hosts");
    let cluster = format!(
        "  - name: upstream\n    type: STRICT_DNS\n    connect_timeout: 1s\n    load_assignment:\n      \
         cluster_name: upstream\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: \
         {{ socket_address: {{ address: upstream.test, port_value: {} }} }} }}\n",
        backend.address.port()
    );
    let bootstrap = HttpBootstrap {
        routes: &route_all("upstream", ""),
        clusters: &cluster,
        ..HttpBootstrap::default()
    }
    .yaml();
    std::fs::write(rootfs.join("etc/istio/proxy/bootstrap.yaml"), bootstrap).expect("bootstrap");

    let mut proxy = ChrootedProxy::spawn(&rootfs, "/etc/istio/proxy/bootstrap.yaml");
    let admin = proxy.admin_address().await;
    proxy
        .wait_for("GET /ready 200", move || async move {
            get(admin, "admin", "/ready")
                .await
                .filter(|(s, _)| *s == 200)
        })
        .await;
    let host = &format!("upstream::127.0.0.1:{}::", backend.address.port());
    proxy
        .wait_for("upstream.test resolved", move || async move {
            get(admin, "admin", "/clusters")
                .await
                .filter(|(_, body)| body.contains(host.as_str()))
        })
        .await;
    // Through a worker (its RNG seeded without /dev) to the resolved host.
    let listener = only_listener_address(admin).await;
    let response = http_request(listener, "GET", "app", "/through-the-image", &[])
        .await
        .expect("request through the proxy");
    assert_eq!(response.status, 200, "{}", proxy.log());
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["path"], "/through-the-image", "{seen:?}");
    drop(proxy);
    let _ = std::fs::remove_dir_all(&rootfs);
    let _ = std::fs::remove_file(rootfs.with_extension("log"));
}

#[test]
fn image_build_is_reproducible_from_the_same_binary() {
    let Some((_, first)) = image() else { return };
    let (_, tern) = layer_entries(&first.layer_tar);
    let dir = scratch_dir("again");
    let binary = dir.join("tern");
    std::fs::write(&binary, &tern).expect("writing tern");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let again = run_build_script(
        &dir.join("oci"),
        &["--binary", binary.to_str().expect("UTF-8")],
    );
    // The index names the manifest by digest, which names the config and the layer.
    assert_eq!(load(&again).index, first.index);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn umoci_unpacks_image_into_a_runtime_bundle_for_1337() {
    let Some((layout, _)) = image() else { return };
    if !require(
        have("umoci"),
        "umoci (scripts/install-test-deps.sh installs it)",
    ) {
        return;
    }
    let bundle = scratch_dir("bundle").join("bundle");
    let mut command = Command::new("umoci");
    command.arg("unpack");
    if !is_root() {
        command.arg("--rootless");
    }
    let output = command
        .arg("--image")
        .arg(format!("{}:{TAG}", layout.display()))
        .arg(&bundle)
        .output()
        .expect("running umoci");
    assert!(
        output.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let spec = read_json(&bundle.join("config.json"));
    let process = &spec["process"];
    assert_eq!(
        process["args"],
        serde_json::json!([
            "/usr/local/bin/tern",
            "-c",
            "/etc/istio/proxy/envoy-rev.json"
        ])
    );
    assert_eq!(process["cwd"], "/");
    assert_eq!(process["user"]["uid"], 1337);
    assert_eq!(process["user"]["gid"], 1337);
    let env = process["env"].as_array().expect("process.env");
    assert!(
        env.contains(&Value::from("PATH=/usr/local/bin:/usr/bin:/bin")),
        "{env:?}"
    );
    let rootfs = bundle.join("rootfs");
    let link = std::fs::read_link(rootfs.join("usr/local/bin/envoy")).expect("envoy symlink");
    assert_eq!(link, Path::new("tern"));
    let metadata = std::fs::metadata(rootfs.join("usr/local/bin/tern")).expect("tern");
    assert_eq!(metadata.permissions().mode() & 0o7777, 0o755);
    let _ = std::fs::remove_dir_all(bundle.parent().expect("scratch dir"));
}
