//! The `peerd-loadgen` binary; everything lives in the library (see its docs).

fn main() -> anyhow::Result<()> {
    peerd_loadgen::main_with_args(std::env::args_os())
}
