//! One row of the route table: a request and what must come of it, built fluently so the table
//! reads as a list of behaviours.
//!
//! Defaults keep rows short and still strict: a case expects status 200; when it names a backend
//! the upstream request must carry the downstream method, path and authority unchanged over
//! HTTP/1.1 unless the row says otherwise, and exactly that backend must have received exactly
//! one request. A case without a backend expects no backend to have received anything.

use tern_tests::http_backend::Protocol;

/// Which listener of `http_routes.yaml` a case is sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `http_in`: the big route table, ports ignored in host matching.
    Main,
    /// `http_strict`: a small route table that matches ports in hosts.
    Strict,
}

/// Which backend must have received the request (whatever answered the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reached {
    /// The backend that answered, or none when the proxy answered itself.
    Answerer,
    /// This backend, although the proxy answered (it gave up waiting).
    Backend(&'static str),
}

#[derive(Clone, Debug)]
pub struct Expect {
    pub status: u16,
    /// The backend whose JSON answered; `None` when the proxy answered itself.
    pub backend: Option<&'static str>,
    pub reached: Reached,
    /// `None`: the downstream path, unchanged.
    pub upstream_path: Option<&'static str>,
    /// `None`: the downstream authority, unchanged.
    pub upstream_authority: Option<&'static str>,
    pub upstream_version: &'static str,
    pub upstream_body_len: Option<u64>,
    /// Upstream request headers that must have exactly these values, in this order.
    pub upstream_headers: Vec<(&'static str, Vec<&'static str>)>,
    pub upstream_absent: Vec<&'static str>,
    /// Response headers that must have exactly these values, in this order.
    pub response_headers: Vec<(&'static str, Vec<&'static str>)>,
    pub response_absent: Vec<&'static str>,
    /// The exact response body (checked for answers that are not a backend's JSON).
    pub body: Option<&'static str>,
}

#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub listener: Listener,
    pub protocol: Protocol,
    pub method: &'static str,
    pub authority: &'static str,
    pub path: &'static str,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: &'static [u8],
    pub expect: Expect,
}

/// `GET http://authority/path` over HTTP/1.1 to `http_in`, expecting 200 from no backend yet.
pub fn get(name: &'static str, authority: &'static str, path: &'static str) -> Case {
    request(name, "GET", authority, path)
}

pub fn request(
    name: &'static str,
    method: &'static str,
    authority: &'static str,
    path: &'static str,
) -> Case {
    Case {
        name,
        listener: Listener::Main,
        protocol: Protocol::Http1,
        method,
        authority,
        path,
        headers: Vec::new(),
        body: b"",
        expect: Expect {
            status: 200,
            backend: None,
            reached: Reached::Answerer,
            upstream_path: None,
            upstream_authority: None,
            upstream_version: "HTTP/1.1",
            upstream_body_len: None,
            upstream_headers: Vec::new(),
            upstream_absent: Vec::new(),
            response_headers: Vec::new(),
            response_absent: Vec::new(),
            body: None,
        },
    }
}

impl Case {
    // ----- the request -----

    pub fn header(mut self, name: &'static str, value: &'static str) -> Case {
        self.headers.push((name, value));
        self
    }

    /// Asks the backend to add response header `name: value`.
    pub fn backend_sets(self, name_value: &'static str) -> Case {
        self.header("x-backend-response-header", name_value)
    }

    pub fn with_body(mut self, body: &'static [u8]) -> Case {
        self.body = body;
        self
    }

    /// Sends over h2c with prior knowledge instead of HTTP/1.1.
    pub fn h2(mut self) -> Case {
        self.protocol = Protocol::Http2;
        self
    }

    /// Sends as HTTP/1.0 instead of HTTP/1.1.
    pub fn http10(mut self) -> Case {
        self.protocol = Protocol::Http10;
        self
    }

    pub fn on_strict_listener(mut self) -> Case {
        self.listener = Listener::Strict;
        self
    }

    // ----- the expectation -----

    pub fn status(mut self, status: u16) -> Case {
        self.expect.status = status;
        self
    }

    /// Answered by `backend`, reached through virtual host `vhost` (its `x-vhost` header).
    pub fn backend(mut self, backend: &'static str, vhost: &'static str) -> Case {
        self.expect.backend = Some(backend);
        self.upstream_header("x-vhost", &[vhost])
    }

    /// Answered by `backend` through the `match` or `actions` route named `route` (`x-route`).
    pub fn route(self, backend: &'static str, vhost: &'static str, route: &'static str) -> Case {
        self.backend(backend, vhost)
            .upstream_header("x-route", &[route])
    }

    pub fn reached(mut self, backend: &'static str) -> Case {
        self.expect.reached = Reached::Backend(backend);
        self
    }

    pub fn upstream_path(mut self, path: &'static str) -> Case {
        self.expect.upstream_path = Some(path);
        self
    }

    pub fn upstream_authority(mut self, authority: &'static str) -> Case {
        self.expect.upstream_authority = Some(authority);
        self
    }

    pub fn upstream_version(mut self, version: &'static str) -> Case {
        self.expect.upstream_version = version;
        self
    }

    pub fn upstream_body_len(mut self, len: u64) -> Case {
        self.expect.upstream_body_len = Some(len);
        self
    }

    pub fn upstream_header(mut self, name: &'static str, values: &[&'static str]) -> Case {
        self.expect.upstream_headers.push((name, values.to_vec()));
        self
    }

    pub fn upstream_absent(mut self, name: &'static str) -> Case {
        self.expect.upstream_absent.push(name);
        self
    }

    pub fn response_header(mut self, name: &'static str, values: &[&'static str]) -> Case {
        self.expect.response_headers.push((name, values.to_vec()));
        self
    }

    pub fn response_absent(mut self, name: &'static str) -> Case {
        self.expect.response_absent.push(name);
        self
    }

    pub fn location(self, location: &'static str) -> Case {
        self.response_header("location", &[location])
    }

    pub fn body(mut self, body: &'static str) -> Case {
        self.expect.body = Some(body);
        self
    }
}
