//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through
//! the same target functions the cargo-fuzz binaries run
//! (`fuzz/targets.rs`), with stable `cargo test`: CI has no cargo-fuzz,
//! and every input a fuzzing run kept (or a crash we fixed) stays a
//! regression test. See docs/SIMULATION.md for running the fuzzers.

#[path = "../fuzz/targets.rs"]
mod targets;
#[path = "../fuzz/targets_adapters.rs"]
mod targets_adapters;

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
        let outcome = std::panic::catch_unwind(|| {
            if targets_adapters::TARGETS.contains(&target) {
                targets_adapters::run(target, &data)
            } else {
                targets::run(target, &data)
            }
        });
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
    for t in targets::TARGETS.iter().chain(targets_adapters::TARGETS) {
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

/// A few seeded mutations of every corpus input, through every target: a
/// seconds-long smoke of each target in CI, which has no cargo-fuzz.
/// `FUZZ_SMOKE_ITERS` (default 200) mutations per target
/// (`FUZZ_SMOKE_TARGETS=a,b` to pick targets); a failure names the target,
/// the input it started from and the mutation.
#[test]
fn smoke_mutations_of_the_corpus() {
    let iters: u64 = std::env::var("FUZZ_SMOKE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // `FUZZ_SMOKE_TARGETS=webhook,merchant_api`: only these.
    let only = std::env::var("FUZZ_SMOKE_TARGETS").ok();
    for target in targets::TARGETS.iter().chain(targets_adapters::TARGETS) {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|t| t == *target))
        {
            continue;
        }
        let dir = corpus_dir(target);
        let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter_map(|p| std::fs::read(&p).ok().map(|d| (p, d)))
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "no corpus for {target}");
        // SplitMix64: the same mutations on every run.
        let mut state: u64 = 0x5EED;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for i in 0..iters {
            let pick = usize::try_from(next() % inputs.len() as u64).unwrap_or(0);
            let (path, base) = &inputs[pick];
            let mut data = base.clone();
            for _ in 0..=(next() % 4) {
                let at = usize::try_from(next() % (data.len() as u64 + 1)).unwrap_or(0);
                match next() % 4 {
                    0 if at < data.len() => data[at] ^= 1 << (next() % 8),
                    1 => data.insert(at, (next() % 256) as u8),
                    2 if at < data.len() => {
                        data.remove(at);
                    }
                    _ => {
                        let interesting: &[&[u8]] = &[
                            b"\"",
                            b"\\u0000",
                            b"-1",
                            b"99999999999999999999",
                            b"{}",
                            b"null",
                            b"[]",
                        ];
                        let s = interesting[usize::try_from(next() % 7).unwrap_or(0)];
                        data.splice(at..at, s.iter().copied());
                    }
                }
            }
            let outcome = std::panic::catch_unwind(|| {
                if targets_adapters::TARGETS.contains(target) {
                    targets_adapters::run(target, &data)
                } else {
                    targets::run(target, &data)
                }
            });
            assert!(
                outcome.is_ok(),
                "fuzz target {target} fails on mutation {i} of {} (input bytes: {:?})",
                path.display(),
                String::from_utf8_lossy(&data)
            );
        }
    }
}
