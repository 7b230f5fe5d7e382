//! The wire formats control and the gateway share: the generated code of the control-plane
//! protocol (`proto/koinos/rtc/v1/*.proto`), how the gateway credential travels, and the
//! Prometheus text exposition helper.

pub mod gateway_credential;
pub mod prometheus_text;

/// `koinos.rtc.v1`: the control plane's gRPC service and messages.
pub mod v1 {
    tonic::include_proto!("koinos.rtc.v1");
}

/// The encoded `FileDescriptorSet` of every `.proto` here, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/koinos_rtc_descriptor.bin"));
