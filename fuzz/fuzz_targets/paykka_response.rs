//! cargo-fuzz target `paykka_response`: see `targets::paykka_response` in fuzz/targets.rs.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::paykka_response(data));
