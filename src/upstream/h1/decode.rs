//! A response body's framing (RFC 9112 §6 and §7.1): from the bytes read so
//! far, the next piece of the body, or that more bytes are needed. No I/O,
//! so that any split of any bytes can be fed to it (see `crate::fuzz`).

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::ServerError;
use super::head::{self, Framing};

/// The longest chunk-size line (with extensions) wharf reads.
pub const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes of a `Content-Length` body still to come.
    Length(u64),
    ChunkSize,
    /// Bytes of the current chunk still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    UntilClose,
    Done,
}

/// What the buffered bytes give.
#[derive(Debug)]
pub enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is complete.
    End,
    /// Nothing more until more bytes are read.
    NeedMore,
}

#[derive(Debug)]
pub struct Decoder {
    state: State,
}

impl Decoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Decoder { state }
    }

    /// The body is complete (or failed).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The bytes still to come, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Done => Some(0),
            State::Length(remaining) => Some(remaining),
            _ => None,
        }
    }

    /// Takes the next piece of the body out of `buf`. After an error the
    /// body is over: its connection cannot be trusted.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, ServerError> {
        let step = self.step(buf);
        if step.is_err() {
            self.state = State::Done;
        }
        step
    }

    /// The server closed the connection: the end of a body delimited by
    /// the close, a cut anywhere else.
    pub fn at_close(&mut self) -> Result<Step, ServerError> {
        let state = std::mem::replace(&mut self.state, State::Done);
        match state {
            State::UntilClose | State::Done => Ok(Step::End),
            _ => Err(ServerError::BodyCut),
        }
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, ServerError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::End),
                State::Length(remaining) | State::ChunkData(remaining) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let take = remaining.min(buf.len() as u64);
                    let data = buf.split_to(take as usize).freeze();
                    let left = remaining - take;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    return Ok(Step::Data(data));
                }
                State::ChunkSize => match httparse::parse_chunk_size(buf) {
                    // httparse takes a line without digits for size 0, and a
                    // bare LF inside an extension: hyper refused both, as
                    // parsers that disagree on where a chunk ends are how
                    // responses are smuggled.
                    Ok(httparse::Status::Complete((used, _)))
                        if used > MAX_CHUNK_LINE
                            || !buf[0].is_ascii_hexdigit()
                            || buf[..used - 2].contains(&b'\n') =>
                    {
                        return Err(ServerError::BadChunk);
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        let _ = buf.split_to(used);
                        self.state = match size {
                            0 => State::Trailers,
                            size => State::ChunkData(size),
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Err(ServerError::BadChunk);
                    }
                    Ok(httparse::Status::Partial) => return Ok(Step::NeedMore),
                    Err(_) => return Err(ServerError::BadChunk),
                },
                State::ChunkEnd => match buf.get(..2) {
                    None if buf.first().is_none_or(|&b| b == b'\r') => return Ok(Step::NeedMore),
                    Some(b"\r\n") => {
                        let _ = buf.split_to(2);
                        self.state = State::ChunkSize;
                    }
                    _ => return Err(ServerError::BadChunk),
                },
                State::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        let _ = buf.split_to(2);
                        self.state = State::Done;
                        return Ok(Step::End);
                    }
                    return match head::parse_trailers(buf)? {
                        Some(trailers) => {
                            self.state = State::Done;
                            Ok(Step::Trailers(trailers))
                        }
                        None => Ok(Step::NeedMore),
                    };
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
            }
        }
    }
}
