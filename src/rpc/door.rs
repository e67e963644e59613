//! What the transport and the application's doors share: the response body types, the
//! server-sent-event stream and what a door learns of a request ([`DoorMeta`]).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;

/// The body of every response the port sends itself.
pub type Body = Full<Bytes>;

/// The body of a response from a door of the port: a whole body, or a stream
/// ([`event_stream`]).
pub type Reply = Either<Body, UnsyncBoxBody<Bytes, Infallible>>;

/// A whole response as a [`Reply`].
pub fn whole(resp: Response<Body>) -> Response<Reply> {
    resp.map(Either::Left)
}

/// A `text/event-stream` response whose body is what is sent on the returned sender, each
/// chunk written as it comes (the caller frames its `data:` lines); the response ends when the
/// sender is dropped. When the client goes away the sender's `closed()` completes.
pub fn event_stream(capacity: usize) -> (tokio::sync::mpsc::Sender<Bytes>, Response<Reply>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(capacity.max(1));
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    let mut resp = Response::new(Either::Right(UnsyncBoxBody::new(StreamBody::new(frames))));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    (tx, resp)
}

/// What a door of the application (`Host::door`) learns of the request beside the request
/// itself.
#[derive(Debug, Clone)]
pub struct DoorMeta {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client's address (the peer, or `X-Forwarded-For` behind a trusted proxy).
    pub client: IpAddr,
    /// The connection's id.
    pub conn_id: Arc<str>,
}
