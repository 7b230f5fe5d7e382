use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["koinos/rtc/v1/control.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["."])?;
    // The encoded descriptor set backs gRPC server reflection (grpcurl, grpcui, Postman).
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("koinos_rtc_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
