//! libFuzzer target: any bytes through `tern::xds::fuzz::apply_encoded_responses` (ADS response
//! decoding, the client's checks, conversion and the xDS state). A panic is a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = tern::xds::fuzz::apply_encoded_responses(data);
});
