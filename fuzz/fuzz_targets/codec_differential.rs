//! cargo-fuzz target `codec_differential`: see `targets::codec_differential` in fuzz/targets.rs.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::codec_differential(data));
