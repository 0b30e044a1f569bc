#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| peerd_codec::fuzzing::decode_roundtrip(data));
