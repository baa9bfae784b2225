//! Builds the apps written with ctx-sdk (`apps/kv`, `apps/counter`,
//! `apps/bank`, `apps/tour`) to WebAssembly, for the tests that check them against the
//! bundled WebAssembly-text apps (`tests/bundled.rs`).
//!
//! Owns: the modules are built by cargo, from source, into their own target
//! directory (`target/apps-wasm`, so the build never waits on the lock of
//! the build that runs the tests) with the workspace's `app` profile; no
//! module is ever committed. When the `wasm32-unknown-unknown` target is
//! not installed, [`BuildError::TargetMissing`] says so and how to install
//! it, so a test can report itself ignored with that reason rather than
//! pass.

use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

/// The target the apps are built for.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// The apps written with ctx-sdk: the name and the package. The first
/// three are the bundled apps (named as scenarios name them); `tour` uses
/// every part of the SDK.
pub const APPS: [(&str, &str); 4] = [
    ("kv", "ctx-app-kv"),
    ("counter", "ctx-app-counter"),
    ("bank", "ctx-app-bank"),
    ("tour", "ctx-app-tour"),
];

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(
        "the {TARGET} target is not installed ({0}); install it with `rustup target add {TARGET}`"
    )]
    TargetMissing(String),
    #[error("cargo could not build the apps to WebAssembly: {0}")]
    Cargo(String),
}

/// The workspace root (this crate is `apps/conformance`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("apps/conformance is two levels below the root")
        .to_path_buf()
}

/// Whether the standard library for [`TARGET`] is installed.
pub fn target_installed() -> Result<(), BuildError> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(|e| BuildError::TargetMissing(format!("cannot run {rustc}: {e}")))?;
    if !output.status.success() {
        return Err(BuildError::TargetMissing(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let has_std = std::fs::read_dir(&libdir)
        .map(|entries| {
            entries
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().starts_with("libstd-"))
        })
        .unwrap_or(false);
    if has_std {
        Ok(())
    } else {
        Err(BuildError::TargetMissing(format!(
            "no standard library in {}",
            libdir.display()
        )))
    }
}

/// Builds the three apps and returns each one's module, by scenario name.
pub fn build_apps() -> Result<Vec<(&'static str, PathBuf)>, BuildError> {
    let packages: Vec<&str> = APPS.iter().map(|(_, package)| *package).collect();
    let out_dir = build_packages(&packages)?;
    Ok(APPS
        .iter()
        .map(|(name, package)| (*name, out_dir.join(module_file(package))))
        .collect())
}

/// The file name cargo gives a package's module.
pub fn module_file(package: &str) -> String {
    format!("{}.wasm", package.replace('-', "_"))
}

/// Builds these packages of the workspace to WebAssembly (the `app`
/// profile, into `target/apps-wasm`) and returns the directory their
/// modules are in ([`module_file`] names each): for any test that needs
/// an SDK app compiled (`ctx-sim`'s `fuzz --app` test too).
pub fn build_packages(packages: &[&str]) -> Result<PathBuf, BuildError> {
    target_installed()?;
    let root = workspace_root();
    let target_dir = root.join("target").join("apps-wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .current_dir(&root)
        .args(["build", "--quiet", "--profile", "app", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        // Set by an enclosing cargo for its own build, not this one.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    for package in packages {
        command.args(["--package", package]);
    }
    let output = command
        .output()
        .map_err(|e| BuildError::Cargo(format!("cannot run {cargo}: {e}")))?;
    if !output.status.success() {
        return Err(BuildError::Cargo(
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ));
    }
    Ok(target_dir.join(TARGET).join("app"))
}
