//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through
//! the same target functions the cargo-fuzz binaries run
//! (`fuzz/targets.rs`), with stable `cargo test`: CI has no cargo-fuzz,
//! and every input a fuzzing run kept (or a crash we fixed) stays a
//! regression test. See docs/SIMULATION.md for running the fuzzers.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target)
}

fn replay(target: &str) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus of {target} missing at {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus of {target} is empty ({}): run the fuzzer and commit its corpus",
        dir.display()
    );
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        // A panic names the input file through this message.
        let outcome = std::panic::catch_unwind(|| targets::run(target, &data));
        if let Err(e) = outcome {
            std::panic::resume_unwind(Box::new(format!(
                "fuzz target {target} fails on {}: {:?}",
                f.display(),
                e.downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| e.downcast_ref::<&str>().copied())
            )));
        }
    }
}

#[test]
fn every_target_has_a_test_and_a_corpus() {
    for t in targets::TARGETS {
        assert!(corpus_dir(t).is_dir(), "no corpus for {t}");
    }
}

#[test]
fn webhook_corpus() {
    replay("webhook");
}

#[test]
fn paykka_response_corpus() {
    replay("paykka_response");
}

#[test]
fn merchant_api_corpus() {
    replay("merchant_api");
}

#[test]
fn codec_differential_corpus() {
    replay("codec_differential");
}

#[test]
fn upcast_corpus() {
    replay("upcast");
}
