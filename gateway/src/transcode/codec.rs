//! A tonic codec for messages known only by descriptor.

use std::fmt;

use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A tonic [`Codec`] for messages known only by descriptor: it encodes any [`DynamicMessage`] and
/// decodes messages of one type, the one given to [`DynamicCodec::new`].
///
/// For a client call that is the method's output (`DynamicCodec::new(method.output())`), for use
/// with `tonic::client::Grpc::unary`/`server_streaming`; a server decodes its input type instead.
///
/// `Debug` shows only the message name: prost-reflect's `Debug` of a descriptor follows message
/// fields without end, and overflows the stack on a recursive type.
#[derive(Clone)]
pub struct DynamicCodec {
    response: MessageDescriptor,
}

impl DynamicCodec {
    /// A codec that decodes messages of type `response`.
    pub fn new(response: MessageDescriptor) -> Self {
        Self { response }
    }
}

impl fmt::Debug for DynamicCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamicCodec")
            .field("response", &self.response.full_name())
            .finish()
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder {
            desc: self.response.clone(),
        }
    }
}

/// A client codec whose requests are protobuf-encoded already: the gateway encodes a request message
/// once, drops the message (a JSON body of many small values is many times its size as a
/// [`DynamicMessage`]), and every attempt sends the same bytes. Responses decode as
/// [`DynamicCodec`]'s do.
#[derive(Clone)]
pub struct EncodedRequestCodec {
    response: MessageDescriptor,
}

impl EncodedRequestCodec {
    /// A codec that sends encoded requests and decodes responses of type `response`.
    pub fn new(response: MessageDescriptor) -> Self {
        Self { response }
    }
}

impl fmt::Debug for EncodedRequestCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedRequestCodec")
            .field("response", &self.response.full_name())
            .finish()
    }
}

impl Codec for EncodedRequestCodec {
    type Encode = bytes::Bytes;
    type Decode = DynamicMessage;
    type Encoder = BytesEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder {
            desc: self.response.clone(),
        }
    }
}

/// The encoder of [`EncodedRequestCodec`]: the bytes as they are.
#[derive(Debug, Clone, Default)]
pub struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = bytes::Bytes;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

/// The encoder of [`DynamicCodec`].
#[derive(Debug, Clone, Default)]
pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        // `EncodeBuf` grows as needed, so prost's only error (not enough room) cannot happen.
        prost::Message::encode(&item, dst).map_err(|err| Status::internal(format!("encoding request: {err}")))
    }
}

/// The decoder of [`DynamicCodec`].
#[derive(Clone)]
pub struct DynamicDecoder {
    desc: MessageDescriptor,
}

impl fmt::Debug for DynamicDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamicDecoder")
            .field("desc", &self.desc.full_name())
            .finish()
    }
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        // Like tonic's own prost codec: a message that does not decode is Internal.
        DynamicMessage::decode(self.desc.clone(), src)
            .map(Some)
            .map_err(|err| Status::internal(format!("decoding {}: {err}", self.desc.full_name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use prost_reflect::DescriptorPool;

    #[test]
    fn codec_debug_does_not_follow_recursive_descriptors() {
        let pool = DescriptorPool::decode(
            prost_types::FileDescriptorSet {
                file: vec![prost_types::FileDescriptorProto {
                    name: Some("node.proto".into()),
                    package: Some("t".into()),
                    syntax: Some("proto3".into()),
                    message_type: vec![prost_types::DescriptorProto {
                        name: Some("Node".into()),
                        field: vec![prost_types::FieldDescriptorProto {
                            name: Some("child".into()),
                            number: Some(1),
                            label: Some(prost_types::field_descriptor_proto::Label::Optional as i32),
                            r#type: Some(prost_types::field_descriptor_proto::Type::Message as i32),
                            type_name: Some(".t.Node".into()),
                            json_name: Some("child".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
            .as_slice(),
        )
        .unwrap();
        let mut codec = DynamicCodec::new(pool.get_message_by_name("t.Node").unwrap());
        assert_eq!(format!("{codec:?}"), r#"DynamicCodec { response: "t.Node" }"#);
        assert_eq!(format!("{:?}", codec.decoder()), r#"DynamicDecoder { desc: "t.Node" }"#);
    }
}
