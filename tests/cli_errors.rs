//! CLI fixes of issue 15 point 7: `replay`/`export` on a missing SQLite
//! file, each error printed once, `demo` into a non-empty store,
//! `serve --help` pointing to the configuration reference.

use std::process::{Command, Output};

fn payorch(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_payorch"))
        .args(args)
        .current_dir(dir)
        .env_remove("PAYORCH_STORE_URL")
        .env_remove("PAYORCH_CONFIG")
        .env_remove("PAYORCH_PAYKKA_BASE_URL")
        .output()
        .expect("run payorch")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn replay_and_export_refuse_a_missing_sqlite_file_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.db");
    let url = format!("sqlite://{}", path.display());
    for args in [
        vec!["--store-url", &url, "replay", "--verify"],
        vec!["--store-url", &url, "replay", "--all"],
        vec!["--store-url", &url, "export"],
    ] {
        let out = payorch(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("does not exist"), "{args:?}: {err}");
        assert!(
            err.contains(path.to_str().unwrap()),
            "{args:?}: names the path: {err}"
        );
        assert!(!path.exists(), "{args:?} created {}", path.display());
    }
    // migrate still creates a new store, after which replay works.
    assert!(
        payorch(dir.path(), &["--store-url", &url, "migrate"])
            .status
            .success()
    );
    let out = payorch(dir.path(), &["--store-url", &url, "replay", "--verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn each_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = payorch(
        dir.path(),
        &["--config", "missing.toml", "replay", "--verify"],
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    let os = std::io::Error::from(std::io::ErrorKind::NotFound).to_string();
    let os_text = err.split(": ").last().unwrap_or_default().trim().to_owned();
    assert!(!os_text.is_empty(), "{err}");
    assert_eq!(err.matches(&os_text).count(), 1, "{err} ({os})");

    // A key file that does not exist: its OS error once.
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        "[paykka]\nbase_url = \"http://127.0.0.1:9/apis\"\n[[merchants]]\nmerchant_id = \"1\"\n\
         private_key_path = \"/nonexistent/k.pem\"\npaykka_public_key_path = \"/nonexistent/p.pem\"\n\
         api_key_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
    )
    .unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let out = payorch(
        dir.path(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--store-url",
            &store,
            "serve",
            "--addr",
            "127.0.0.1:0",
        ],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("private_key_path"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");

    // A SQLite store in a missing directory: the database error once.
    let out = payorch(
        dir.path(),
        &["--store-url", "sqlite:///nonexistent/dir/x.db", "migrate"],
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert_eq!(
        err.matches("unable to open database file").count(),
        1,
        "{err}"
    );
}

#[test]
fn demo_refuses_a_store_that_already_holds_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("demo.db").display());
    let first = payorch(dir.path(), &["--json", "demo", "--store", &store]);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = payorch(dir.path(), &["demo", "--store", &store]);
    assert_eq!(second.status.code(), Some(2));
    let err = stderr(&second);
    assert!(err.contains("already holds events"), "{err}");
    assert!(err.contains("demo.db"), "{err}");
}

#[test]
fn serve_help_points_to_the_config_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = payorch(dir.path(), &["serve", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("docs/CONFIG.md"), "{text}");
    assert!(text.contains("--log-format"), "{text}");
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md"))
        .expect("docs/CONFIG.md");
    assert!(doc.contains("`log_format`"));
}
