fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["koinos/rtc/v1/control.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
