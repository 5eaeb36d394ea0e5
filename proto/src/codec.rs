//! The CRI services' gRPC codec: prost's, except that a request which does not
//! decode (invalid UTF-8 in a `string` field such as a label, a truncated or
//! mistyped field) is the client's error, InvalidArgument, where tonic-prost
//! answers Internal.

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] with decode errors mapped to InvalidArgument.
#[derive(Debug, Clone)]
pub struct CriCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for CriCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for CriCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CriDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CriDecoder(ProstCodec::<T, U>::default().decoder())
    }
}

/// [`ProstDecoder`] whose errors are InvalidArgument.
#[derive(Debug, Clone)]
pub struct CriDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for CriDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| {
            if s.code() == Code::Internal {
                Status::invalid_argument(format!("malformed request: {}", s.message()))
            } else {
                s
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
