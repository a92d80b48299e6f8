//! gRPC's framing of a message on the wire: a compressed flag (0), the length as a
//! big-endian `u32`, then the encoded message. h2load sends such a body verbatim.

/// `message` as one uncompressed gRPC frame.
pub fn frame(message: &impl prost::Message) -> Vec<u8> {
    let len = message.encoded_len();
    let mut out = Vec::with_capacity(5 + len);
    out.push(0);
    out.extend_from_slice(
        &u32::try_from(len)
            .expect("a benchmark message is far below 4 GiB")
            .to_be_bytes(),
    );
    message
        .encode(&mut out)
        .expect("a Vec grows as needed, so encoding cannot run out of space");
    out
}

#[cfg(test)]
mod tests {
    use contracts::inventory::v1::GetProductRequest;

    use super::*;

    #[test]
    fn prefixes_flag_and_big_endian_length() {
        let body = frame(&GetProductRequest {
            sku: "SKU-005".into(),
        });
        // Field 1, length-delimited (0x0a), 7 bytes.
        assert_eq!(body, b"\x00\x00\x00\x00\x09\x0a\x07SKU-005");
    }

    #[test]
    fn empty_message_is_a_bare_header() {
        assert_eq!(frame(&GetProductRequest::default()), [0, 0, 0, 0, 0]);
    }
}
