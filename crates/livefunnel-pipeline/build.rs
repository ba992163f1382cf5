//! The build's git commit, for `livefunnel_build_info{git_sha}` and `--version`:
//! `GIT_SHA` from the environment (the Dockerfile's build argument: the image is built
//! without `.git`), else `git rev-parse` of this checkout, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GIT_SHA");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // A new commit or checkout changes HEAD or the ref it names.
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if root.join(path).exists() {
            println!("cargo:rerun-if-changed={}", root.join(path).display());
        }
    }
    let from_env = std::env::var("GIT_SHA").ok().filter(|s| !s.trim().is_empty());
    let sha = from_env.or_else(|| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    println!("cargo:rustc-env=BUILD_GIT_SHA={}", sha.as_deref().unwrap_or("unknown"));
}
