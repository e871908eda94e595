//! wharf's own keepalive for a websocket's client (`ws_ping`,
//! `ws_pong_timeout`): a client silent for `every` gets a ping whose payload
//! ("wharf" and 8 random bytes, one per websocket) marks it as wharf's, so
//! that the pong answering it is recognised and not passed to the server.
//! Anything heard from the client proves it alive; a ping unanswered (and
//! nothing else heard) by the pong timeout means the client is gone.

use std::time::Duration;

use tokio::time::Instant;

use super::frame::{self, Opcode};

const TOKEN_PREFIX: &[u8; 5] = b"wharf";
const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 8;

#[derive(Debug)]
pub(super) struct Keepalive {
    every: Option<Duration>,
    pong_timeout: Duration,
    /// The payload of wharf's pings on this websocket, made at the first one.
    token: Option<[u8; TOKEN_LEN]>,
    /// A ping is unanswered: the client is gone unless heard from by then.
    deadline: Option<Instant>,
    /// When the client last sent anything.
    last_heard: Instant,
}

/// What the keepalive wants done now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Due {
    Nothing,
    Ping,
    Dead,
}

impl Keepalive {
    pub fn new(every: Option<Duration>, pong_timeout: Duration, now: Instant) -> Self {
        Keepalive {
            every,
            pong_timeout,
            token: None,
            deadline: None,
            last_heard: now,
        }
    }

    /// The client sent something.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.deadline = None;
    }

    /// The payload a pong must carry to be wharf's; once a ping has been
    /// sent, a late pong is still recognised.
    pub fn token(&self) -> Option<&[u8]> {
        self.token.as_ref().map(|t| &t[..])
    }

    /// A ping frame for the client; the pong timeout starts now.
    pub fn ping(&mut self, now: Instant) -> Vec<u8> {
        let token = *self.token.get_or_insert_with(|| {
            let mut token = [0; TOKEN_LEN];
            token[..TOKEN_PREFIX.len()].copy_from_slice(TOKEN_PREFIX);
            token[TOKEN_PREFIX.len()..].copy_from_slice(&rand::random::<[u8; 8]>());
            token
        });
        self.deadline.get_or_insert(now + self.pong_timeout);
        frame::control_frame(Opcode::Ping, &token, None)
    }

    pub fn due(&self, now: Instant) -> Due {
        match self.deadline {
            Some(deadline) if now >= deadline => Due::Dead,
            Some(_) => Due::Nothing,
            None if self
                .every
                .is_some_and(|every| now >= self.last_heard + every) =>
            {
                Due::Ping
            }
            None => Due::Nothing,
        }
    }

    /// When [`Keepalive::due`] may next have something to do.
    pub fn next(&self) -> Option<Instant> {
        self.deadline
            .or_else(|| self.every.map(|every| self.last_heard + every))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_a_silent_client_and_declares_it_dead_without_an_answer() {
        let start = Instant::now();
        let s = Duration::from_secs;
        let mut k = Keepalive::new(Some(s(30)), s(10), start);
        assert_eq!(k.due(start + s(29)), Due::Nothing);
        assert_eq!(k.due(start + s(30)), Due::Ping);
        let ping = k.ping(start + s(30));
        assert_eq!(&ping[2..], k.token().expect("token"));
        assert!(k.token().expect("token").starts_with(b"wharf"));
        assert_eq!(k.next(), Some(start + s(40)));
        assert_eq!(k.due(start + s(39)), Due::Nothing);
        assert_eq!(k.due(start + s(40)), Due::Dead);
        // Heard from: alive, next ping after another silent period, same token.
        let token = k.token().expect("token").to_vec();
        k.heard(start + s(35));
        assert_eq!(k.due(start + s(40)), Due::Nothing);
        assert_eq!(k.next(), Some(start + s(65)));
        k.ping(start + s(65));
        assert_eq!(k.token(), Some(&token[..]));
    }

    #[test]
    fn without_ws_ping_nothing_is_due_until_asked() {
        let start = Instant::now();
        let mut k = Keepalive::new(None, Duration::from_secs(10), start);
        assert_eq!(k.next(), None);
        assert_eq!(k.due(start + Duration::from_secs(3600)), Due::Nothing);
        k.ping(start);
        assert_eq!(k.due(start + Duration::from_secs(10)), Due::Dead);
    }
}
