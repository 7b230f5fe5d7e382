//! Generated code for the koinos-rtc control-plane protocol (`proto/koinos/rtc/v1/*.proto`).

/// `koinos.rtc.v1`: the control plane's gRPC service and messages.
pub mod v1 {
    tonic::include_proto!("koinos.rtc.v1");
}

/// The encoded `FileDescriptorSet` of every `.proto` here, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/koinos_rtc_descriptor.bin"));
