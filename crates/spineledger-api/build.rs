//! Generates the `spineledger.v1` gRPC code from `proto/` with a vendored `protoc`, so a
//! fresh machine needs no system protobuf compiler. The file descriptor set is kept for
//! server reflection (grpcurl, GUI clients).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let package_dir = proto_root.join("spineledger/v1");
    let mut protos: Vec<PathBuf> = std::fs::read_dir(&package_dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    protos.sort();
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    println!("cargo:rerun-if-changed={}", package_dir.display());

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Requests that do not decode (a string that is not UTF-8) are INVALID_ARGUMENT.
        .codec_path("crate::codec::EdgeCodec")
        .file_descriptor_set_path(out_dir.join("spineledger_v1_descriptor.bin"))
        .compile_with_config(config, &protos, &[proto_root])?;
    Ok(())
}
