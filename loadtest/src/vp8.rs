//! What a received VP8 RTP packet says about the picture: whether it starts a key frame, and if
//! so the frame's size (RFC 7741 payload descriptor, then the VP8 key frame header of RFC 6386
//! §9.1). That is how a simulated participant knows which simulcast layer LiveKit sends it,
//! without decoding video.

/// Width and height of the key frame this packet starts, `None` for any other packet.
pub fn key_frame_size(payload: &[u8]) -> Option<(u16, u16)> {
    let first = *payload.first()?;
    let extended = first & 0x80 != 0;
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x07;
    if !start_of_partition || partition_id != 0 {
        return None;
    }
    let mut at = 1;
    if extended {
        let flags = *payload.get(at)?;
        at += 1;
        if flags & 0x80 != 0 {
            // PictureID: 7 or 15 bits (M flag).
            let picture = *payload.get(at)?;
            at += if picture & 0x80 != 0 { 2 } else { 1 };
        }
        if flags & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if flags & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    let frame = payload.get(at..)?;
    // Frame tag: bit 0 clear for a key frame; then the start code 9d 01 2a and the sizes.
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key frame's first bytes as libvpx writes them: frame tag, start code, 640×360.
    const KEY_640X360: [u8; 10] = [0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];

    #[test]
    fn a_key_frame_after_a_short_descriptor_gives_its_size() {
        let mut packet = vec![0x10];
        packet.extend_from_slice(&KEY_640X360);
        assert_eq!(key_frame_size(&packet), Some((640, 360)));
    }

    #[test]
    fn a_key_frame_after_an_extended_descriptor_gives_its_size() {
        // X set; I, L, T present; a 15-bit picture id.
        let mut packet = vec![0x90, 0xe0, 0x80 | 0x12, 0x34, 0x05, 0x20];
        packet.extend_from_slice(&KEY_640X360);
        assert_eq!(key_frame_size(&packet), Some((640, 360)));
        // The scale bits above the 14-bit sizes are not part of them.
        let mut scaled = packet.clone();
        let last = scaled.len() - 1;
        scaled[last] |= 0xc0;
        assert_eq!(key_frame_size(&scaled), Some((640, 360)));
    }

    #[test]
    fn other_packets_give_nothing() {
        let mut inter = vec![0x10];
        inter.extend_from_slice(&KEY_640X360);
        inter[1] |= 0x01; // an inter frame
        assert_eq!(key_frame_size(&inter), None);
        let mut continuation = vec![0x00];
        continuation.extend_from_slice(&KEY_640X360);
        assert_eq!(key_frame_size(&continuation), None);
        assert_eq!(key_frame_size(&[]), None);
        assert_eq!(key_frame_size(&[0x90]), None);
        assert_eq!(key_frame_size(&[0x10, 0x50, 0x42]), None);
    }
}
