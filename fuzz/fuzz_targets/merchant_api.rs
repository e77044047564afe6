//! cargo-fuzz target `merchant_api`: see `targets::merchant_api` in fuzz/targets.rs.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::merchant_api(data));
