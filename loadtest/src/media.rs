//! The media every simulated participant publishes, made once per run and shared:
//!
//! - audio: a tone with a slow swell, encoded to 20 ms Opus packets with the `opus` crate at
//!   start-up;
//! - video: three VP8 streams (640×360, 960×540, 1280×720 — the gateway's ladder) of a moving
//!   test picture, encoded by libvpx's `vpxenc` from frames generated here, and kept as IVF files
//!   in a cache directory so later runs skip the encoding. Nothing is downloaded.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;

pub const AUDIO_FRAME: Duration = Duration::from_millis(20);
pub const VIDEO_FPS: u32 = 15;
/// Frames per looped clip: four seconds, with a key frame every second. The clip is encoded in
/// advance, so a new subscriber's picture request (PLI) cannot be answered at once; the next key
/// frame is at most a second away, as LiveKit would get from a browser within a round trip or so.
const VIDEO_FRAMES: usize = 60;
const KEY_FRAME_EVERY: usize = 15;

/// One simulcast layer: its size, the bitrate it is encoded at and LiveKit's name for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    pub rid: &'static str,
    pub width: u32,
    pub height: u32,
    pub kbps: u32,
}

/// Lowest first, as LiveKit lists layers (q, h, f = LOW, MEDIUM, HIGH).
pub const LAYERS: [Layer; 3] = [
    Layer {
        rid: "q",
        width: 640,
        height: 360,
        kbps: 400,
    },
    Layer {
        rid: "h",
        width: 960,
        height: 540,
        kbps: 800,
    },
    Layer {
        rid: "f",
        width: 1280,
        height: 720,
        kbps: 1500,
    },
];

pub struct Media {
    /// 20 ms Opus packets, played in a loop.
    pub audio: Vec<Bytes>,
    /// Per layer (as in [`LAYERS`]), VP8 frames at [`VIDEO_FPS`], played in a loop.
    pub video: Vec<Vec<Bytes>>,
}

impl Media {
    pub fn prepare(cache: &Path) -> Result<Self> {
        let audio = opus_tone()?;
        let video = LAYERS
            .iter()
            .map(|layer| vp8_clip(cache, *layer))
            .collect::<Result<_>>()?;
        Ok(Self { audio, video })
    }
}

/// Two seconds of a 330 Hz tone whose loudness swells and fades, as 20 ms Opus packets.
fn opus_tone() -> Result<Vec<Bytes>> {
    const RATE: usize = 48_000;
    const FRAME: usize = RATE / 50;
    let mut encoder =
        opus::Encoder::new(RATE as u32, opus::Channels::Mono, opus::Application::Voip)
            .context("Opus encoder")?;
    let mut packets = Vec::new();
    let mut out = vec![0u8; 1500];
    for frame in 0..100 {
        let pcm: Vec<i16> = (0..FRAME)
            .map(|i| {
                let t = (frame * FRAME + i) as f32 / RATE as f32;
                let swell = 0.55 + 0.45 * (std::f32::consts::PI * t).sin();
                (12_000.0 * swell * (2.0 * std::f32::consts::PI * 330.0 * t).sin()) as i16
            })
            .collect();
        let len = encoder.encode(&pcm, &mut out).context("Opus encoding")?;
        packets.push(Bytes::copy_from_slice(&out[..len]));
    }
    Ok(packets)
}

fn clip_path(cache: &Path, layer: Layer) -> PathBuf {
    cache.join(format!(
        "vp8-{}x{}-{}fps-{}kbps-kf{}.ivf",
        layer.width, layer.height, VIDEO_FPS, layer.kbps, KEY_FRAME_EVERY
    ))
}

/// The layer's clip from the cache, encoding it first if it is not there.
fn vp8_clip(cache: &Path, layer: Layer) -> Result<Vec<Bytes>> {
    let path = clip_path(cache, layer);
    if !path.exists() {
        std::fs::create_dir_all(cache)
            .with_context(|| format!("cannot create the media cache {}", cache.display()))?;
        encode_clip(&path, layer)?;
    }
    let frames =
        read_ivf(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
            .with_context(|| {
                format!(
                    "{} is damaged; delete it to have it made again",
                    path.display()
                )
            })?;
    ensure!(
        !frames.is_empty(),
        "{} holds no frames; delete it to have it made again",
        path.display()
    );
    Ok(frames)
}

fn encode_clip(path: &Path, layer: Layer) -> Result<()> {
    let partial = path.with_extension("ivf.partial");
    let mut child = Command::new("vpxenc")
        .args([
            "--codec=vp8",
            "--ivf",
            "--passes=1",
            "--good",
            "--cpu-used=8",
            "--lag-in-frames=0",
            "--error-resilient=1",
            "--quiet",
            &format!("--kf-max-dist={KEY_FRAME_EVERY}"),
            &format!("--kf-min-dist={KEY_FRAME_EVERY}"),
            &format!("--target-bitrate={}", layer.kbps),
            "-o",
        ])
        .arg(&partial)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run vpxenc (Debian package vpx-tools; `dev/stack setup` installs it)")?;
    {
        let mut stdin = child.stdin.take().context("vpxenc stdin")?;
        stdin.write_all(&y4m_clip(layer.width as usize, layer.height as usize))?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "vpxenc failed for {}x{}: {}",
            layer.width,
            layer.height,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::rename(&partial, path)?;
    Ok(())
}

/// A moving test picture as YUV4MPEG2: diagonal stripes drifting right and a bright block
/// crossing the frame, so every frame differs and the encoder spends its bitrate.
fn y4m_clip(width: usize, height: usize) -> Vec<u8> {
    let mut out =
        format!("YUV4MPEG2 W{width} H{height} F{VIDEO_FPS}:1 Ip A1:1 C420jpeg\n").into_bytes();
    for frame in 0..VIDEO_FRAMES {
        out.extend_from_slice(b"FRAME\n");
        let block = (frame * width / VIDEO_FRAMES, height / 3);
        for y in 0..height {
            for x in 0..width {
                let in_block = x >= block.0
                    && x < block.0 + width / 8
                    && y >= block.1
                    && y < block.1 + height / 4;
                let luma = if in_block {
                    235
                } else {
                    16 + ((x + y + frame * 8) % 64) as u8 * 3
                };
                out.push(luma);
            }
        }
        for plane in 0..2 {
            for y in 0..height / 2 {
                for x in 0..width / 2 {
                    out.push(if plane == 0 {
                        (64 + (x + frame) % 128) as u8
                    } else {
                        (64 + (y + frame) % 128) as u8
                    });
                }
            }
        }
    }
    out
}

/// The frames of an IVF file (32-byte file header; per frame a 12-byte header with its size).
pub fn read_ivf(data: &[u8]) -> Result<Vec<Bytes>> {
    ensure!(data.len() >= 32 && &data[..4] == b"DKIF", "not an IVF file");
    let header_len = u16::from_le_bytes([data[6], data[7]]) as usize;
    ensure!(
        &data[8..12] == b"VP80",
        "not VP8 (fourcc {:?})",
        String::from_utf8_lossy(&data[8..12])
    );
    let mut at = header_len;
    let mut frames = Vec::new();
    while at < data.len() {
        ensure!(at + 12 <= data.len(), "truncated frame header at byte {at}");
        let size = u32::from_le_bytes(data[at..at + 4].try_into()?) as usize;
        at += 12;
        ensure!(at + size <= data.len(), "truncated frame at byte {at}");
        frames.push(Bytes::copy_from_slice(&data[at..at + size]));
        at += size;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tone_is_fifty_packets_a_second_of_real_opus() {
        let packets = opus_tone().unwrap();
        assert_eq!(packets.len(), 100);
        let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
        let mut pcm = vec![0i16; 960];
        let samples = decoder.decode(&packets[10], &mut pcm, false).unwrap();
        assert_eq!(samples, 960);
        assert!(
            pcm.iter().any(|s| s.unsigned_abs() > 1000),
            "the tone is audible"
        );
    }

    #[test]
    fn ivf_frames_are_read_and_damage_is_reported() {
        let mut file = b"DKIF\0\0\x20\0VP80".to_vec();
        file.resize(32, 0);
        for payload in [&b"abc"[..], &b"de"[..]] {
            file.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            file.extend_from_slice(&[0; 8]);
            file.extend_from_slice(payload);
        }
        let frames = read_ivf(&file).unwrap();
        assert_eq!(
            frames,
            vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")]
        );
        assert!(read_ivf(&file[..file.len() - 1]).is_err());
        assert!(read_ivf(b"nope").is_err());
    }

    #[test]
    fn the_test_picture_is_a_well_formed_y4m() {
        let clip = y4m_clip(16, 8);
        let header = b"YUV4MPEG2 W16 H8 F15:1 Ip A1:1 C420jpeg\n".len();
        assert_eq!(clip.len(), header + VIDEO_FRAMES * (6 + 16 * 8 * 3 / 2));
    }
}
