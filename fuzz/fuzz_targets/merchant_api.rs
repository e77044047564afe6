//! cargo-fuzz target `merchant_api`: see `targets_adapters::merchant_api` in fuzz/targets_adapters.rs.
#![no_main]

#[path = "../targets.rs"]
mod targets;
#[path = "../targets_adapters.rs"]
mod targets_adapters;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets_adapters::merchant_api(data));
