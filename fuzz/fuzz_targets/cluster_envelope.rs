#![no_main]
//! Messages from other cluster nodes (`peerd_server` `cluster::wire`): the bytes come from
//! NATS, so the decoder must refuse anything malformed without a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| peerd_server::fuzzing::cluster_envelope(data));
