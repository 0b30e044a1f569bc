//! The fuzz seed corpus in `fuzz/seeds/` is one valid frame of every kind (the shared
//! `samples()`), plus all of them concatenated. This test keeps the committed files in step
//! with the codec: it fails when they differ, and rewrites them when run with
//! `PEERD_WRITE_FUZZ_SEEDS=1`.

mod common;

use std::path::PathBuf;

#[test]
fn fuzz_seeds_are_current() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let write = std::env::var_os("PEERD_WRITE_FUZZ_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut files = Vec::new();
    let mut stream = Vec::new();
    for m in common::samples() {
        let f = m.frame();
        stream.extend_from_slice(&f);
        files.push((format!("{:?}.bin", m.kind()).to_lowercase(), f));
    }
    files.push(("stream-all-kinds.bin".to_string(), stream));
    for (name, bytes) in files {
        let path = dir.join(&name);
        if write {
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e}; run with PEERD_WRITE_FUZZ_SEEDS=1", path.display())
            });
            assert_eq!(
                on_disk, bytes,
                "{name} is stale; run with PEERD_WRITE_FUZZ_SEEDS=1"
            );
        }
    }
}
