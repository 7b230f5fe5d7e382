//! The participant's WebRTC side: its two peer connections, the local tracks and the pumps
//! that feed them, and the readers that watch everyone else's tracks.

use super::*;

pub(super) async fn peer_connection(
    plan: &Plan,
    ice_servers: &[RTCIceServer],
    target: lk::SignalTarget,
    events: mpsc::UnboundedSender<Event>,
) -> Result<Arc<dyn PeerConnection>> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_codec(codec_parameters(RtpCodecKind::Audio), RtpCodecKind::Audio)?;
    media_engine.register_codec(codec_parameters(RtpCodecKind::Video), RtpCodecKind::Video)?;
    // LiveKit (pion) tells simulcast layers apart by these: without them it drops the video.
    for uri in [
        "urn:ietf:params:rtp-hdrext:sdes:mid",
        "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    ] {
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )?;
    }
    let mut registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    if let (lk::SignalTarget::Subscriber, Some(loss)) = (target, &plan.loss) {
        // Nearest the wire, so that what it drops is lost to everything after it.
        registry = registry.with(
            Slot::Custom(500),
            LossInterceptor::new(Arc::clone(loss), rand_ssrc() as u64),
        );
    }
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(ice_servers.to_vec())
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler { target, events }))
        .with_udp_addrs(vec![format!("{}:0", plan.bind_ip)])
        .build()
        .await?;
    Ok(Arc::new(pc))
}

pub(super) fn codec(kind: RtpCodecKind) -> RTCRtpCodec {
    match kind {
        RtpCodecKind::Audio => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

pub(super) fn codec_parameters(kind: RtpCodecKind) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: codec(kind),
        payload_type: if kind == RtpCodecKind::Audio {
            OPUS_PT
        } else {
            VP8_PT
        },
    }
}

/// A local track with one encoding per `rids` entry (simulcast when there are several).
pub(super) fn local_track(
    cid: &str,
    kind: RtpCodecKind,
    rids: &[Option<&str>],
) -> Result<(Arc<TrackLocalStaticSample>, Vec<u32>)> {
    let ssrcs: Vec<u32> = rids.iter().map(|_| rand_ssrc()).collect();
    let encodings = rids
        .iter()
        .zip(&ssrcs)
        .map(|(rid, ssrc)| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: rid.map(str::to_owned).unwrap_or_default(),
                ssrc: Some(*ssrc),
                ..Default::default()
            },
            codec: codec(kind),
            ..Default::default()
        })
        .collect();
    let track = TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            "koinos-loadtest".to_owned(),
            cid.to_owned(),
            cid.to_owned(),
            kind,
            encodings,
        ),
    )?;
    Ok((Arc::new(track), ssrcs))
}

pub(super) fn rand_ssrc() -> u32 {
    let mut bytes = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("system randomness");
    u32::from_le_bytes(bytes) | 1
}

pub(super) fn sample(data: bytes::Bytes, timestamp: Instant, duration: Duration) -> Sample {
    Sample {
        data,
        timestamp,
        duration,
        packet_timestamp: 0,
        prev_dropped_packets: 0,
        prev_padding_packets: 0,
    }
}

pub(super) async fn pump_audio(track: Arc<TrackLocalStaticSample>, ssrc: u32, media: Arc<Media>) {
    let mut tick = tokio::time::interval(AUDIO_FRAME);
    for packet in media.audio.iter().cycle() {
        tick.tick().await;
        let sample = sample(packet.clone(), Instant::now(), AUDIO_FRAME);
        if track
            .write_sample(ssrc, OPUS_PT, &sample, &[])
            .await
            .is_err()
        {
            return;
        }
    }
}

/// An RTP header extension whose value is a short string (the SDES MID and RID items).
pub(super) struct Sdes(String);

impl MarshalSize for Sdes {
    fn marshal_size(&self) -> usize {
        self.0.len()
    }
}

impl Marshal for Sdes {
    fn marshal_to(&self, buf: &mut [u8]) -> rtc::shared::error::Result<usize> {
        buf[..self.0.len()].copy_from_slice(self.0.as_bytes());
        Ok(self.0.len())
    }
}

pub(super) fn sdes(uri: &'static str, value: &str) -> HeaderExtension {
    HeaderExtension::Custom {
        uri: uri.into(),
        extension: Box::new(Sdes(value.to_owned())),
    }
}

/// The `a=mid` of the first `m=video` section of an SDP.
pub(super) fn video_mid(sdp: &str) -> Option<String> {
    let section = sdp.split("\nm=").find(|s| s.starts_with("video"))?;
    let mid = section
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=mid:"))?;
    Some(mid.to_owned())
}

pub(super) async fn pump_video(
    track: Arc<TrackLocalStaticSample>,
    ssrcs: Vec<u32>,
    mid: String,
    media: Arc<Media>,
) {
    let frame_time = Duration::from_secs(1) / VIDEO_FPS;
    let mut tick = tokio::time::interval(frame_time);
    // LiveKit (pion) learns which simulcast layer an SSRC carries from these two extensions.
    let extensions: Vec<[HeaderExtension; 2]> = LAYERS
        .iter()
        .map(|layer| {
            [
                sdes("urn:ietf:params:rtp-hdrext:sdes:mid", &mid),
                sdes("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id", layer.rid),
            ]
        })
        .collect();
    for index in 0.. {
        tick.tick().await;
        let now = Instant::now();
        for ((layer, ssrc), extensions) in media.video.iter().zip(&ssrcs).zip(&extensions) {
            let data = layer[index % layer.len()].clone();
            let sample = sample(data, now, frame_time);
            if track
                .write_sample(*ssrc, VP8_PT, &sample, extensions)
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Reads one remote track to its end, recording what arrives.
pub(super) async fn watch(
    track: Arc<dyn TrackRemote>,
    observations: Arc<Mutex<Observations>>,
    started: Instant,
    identities: HashMap<String, String>,
) {
    let stream = track.stream_id().await.to_string();
    let track_id = track.track_id().await.to_string();
    // LiveKit's stream ids are "<participant sid>|<track sid>".
    let (participant_sid, track_sid) = stream
        .split_once('|')
        .map(|(p, t)| (p.to_owned(), t.to_owned()))
        .unwrap_or((stream.clone(), track_id));
    let kind = format!("{}", track.kind().await);
    {
        let mut o = observations.lock().unwrap();
        let entry = o.remote.entry(track_sid.clone()).or_default();
        entry.from = identities
            .get(&participant_sid)
            .cloned()
            .unwrap_or(participant_sid);
        entry.kind = kind.clone();
    }
    let mut last_seq: Option<u16> = None;
    let mut size: Option<(u16, u16)> = None;
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            if matches!(event, TrackRemoteEvent::OnEnded) {
                break;
            }
            continue;
        };
        let at = ms_since(started);
        let seq = packet.header.sequence_number;
        let gap = last_seq
            .map(|last| seq.wrapping_sub(last).wrapping_sub(1))
            .filter(|gap| *gap < 1000)
            .unwrap_or(0);
        last_seq = Some(seq);
        // LiveKit fills a paused or closing track with tiny blank key frames: not a layer.
        let key = if kind == "video" {
            vp8::key_frame_size(&packet.payload).filter(|(w, h)| *w >= 64 && *h >= 64)
        } else {
            None
        };
        let mut o = observations.lock().unwrap();
        let entry = o.remote.entry(track_sid.clone()).or_default();
        entry.packets += 1;
        entry.bytes += packet.payload.len() as u64;
        entry.lost += u64::from(gap);
        entry.first_packet_ms.get_or_insert(at);
        if let Some(dims) = key {
            entry.first_frame_ms.get_or_insert(at);
            if size != Some(dims) {
                size = Some(dims);
                entry.resolutions.push((at, dims.0, dims.1));
            }
        }
    }
}
