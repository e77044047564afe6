//! cargo-fuzz target `upcast`: see `targets::upcast` in fuzz/targets.rs.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::upcast(data));
