//! Generated code for the koinos-rtc control-plane protocol (`proto/koinos/rtc/v1/*.proto`).

/// `koinos.rtc.v1`: the control plane's gRPC service and messages.
pub mod v1 {
    tonic::include_proto!("koinos.rtc.v1");
}
