//! How the connection's task takes calls from the channel: sealed at once into the outgoing
//! buffer (every call ready leaves in one write), or, behind a write the socket is not
//! taking, kept unsealed (up to `held`, their deadlines kept) until it is done.

use std::time::Instant;

use rpckit_proto::{ClientMessage, SessionError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::task::{End, Owner};
use super::{Control, Envelope};
use crate::calls::{Outcome, Pending};
use crate::error::{CallError, ConnectionLost};

impl<Req, Resp> Owner<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    /// Whether to take calls from the channel now: not after goodbye, and behind a blocked
    /// write only up to `held`.
    pub(super) fn taking_calls(&self) -> bool {
        !self.goodbye && (!self.out.is_blocked() || self.waiting.len() < self.inbox.held)
    }

    /// Takes every control message ready now, the calls that waited behind a blocked write
    /// once it is done, and every call ready now. Cancels go first (they were sent before
    /// later calls); a goodbye goes last, after the calls handed over before it.
    pub(super) fn take_ready(&mut self) -> Result<(), End> {
        let goodbye = self.take_control()?;
        let mut now = None;
        while !self.out.is_blocked() {
            match self.waiting.pop_front() {
                Some(envelope) => self.take(envelope, &mut now)?,
                None => break,
            }
        }
        while self.taking_calls() {
            match self.inbox.requests.try_recv() {
                Ok(envelope) => self.take(envelope, &mut now)?,
                Err(_) => break,
            }
        }
        if goodbye {
            self.on_control(Some(Control::Goodbye))?;
        }
        Ok(())
    }

    /// Handles every control message ready now but a goodbye, which it only reports
    /// (`true`): the caller handles it after taking the calls handed over before it.
    pub(super) fn take_control(&mut self) -> Result<bool, End> {
        let mut goodbye = false;
        while let Ok(control) = self.inbox.control.try_recv() {
            match control {
                Control::Goodbye => goodbye = true,
                control => self.on_control(Some(control))?,
            }
        }
        Ok(goodbye)
    }

    /// Closes the channel: calls not sealed yet come back to their callers as not sent.
    pub(super) fn not_sent(&mut self) {
        self.inbox.requests.close();
        let channel = std::iter::from_fn(|| self.inbox.requests.try_recv().ok());
        for envelope in self.waiting.drain(..).chain(channel) {
            let _ = envelope.reply.send(Outcome::NotSent(envelope.request));
        }
    }

    /// Seals call `envelope` for the socket and enters it in the table, or, behind a blocked
    /// write, keeps it waiting; a call whose caller is gone is dropped, one whose deadline
    /// passed times out unsent. `now` caches the clock across a batch.
    pub(super) fn take(
        &mut self,
        envelope: Envelope<Req, Resp>,
        now: &mut Option<Instant>,
    ) -> Result<(), End> {
        if envelope.reply.is_canceled() {
            return Ok(());
        }
        if self.out.is_blocked() {
            if let Some(d) = envelope.deadline {
                self.alarm.ring_by(d.at);
            }
            self.waiting.push_back(envelope);
            return Ok(());
        }
        let Envelope {
            id,
            request,
            deadline,
            reply,
        } = envelope;
        // The server gets the time the call has left now.
        let mut sent_deadline = None;
        if let Some(d) = deadline {
            let now = *now.get_or_insert_with(Instant::now);
            let left = d.at.saturating_duration_since(now).min(d.left);
            if left.is_zero() {
                let _ = reply.send(Outcome::Done(Err(CallError::Timeout(d.left))));
                return Ok(());
            }
            sent_deadline = Some(left);
            self.alarm.ring_by(d.at);
        }
        let message = ClientMessage::Call {
            id,
            deadline: sent_deadline,
            request: &request,
        };
        match self.out.seal_call(id, &message) {
            Ok(()) => {
                self.calls.insert(
                    id,
                    Pending {
                        reply,
                        request,
                        written: false,
                        deadline,
                    },
                );
                Ok(())
            }
            Err(SessionError::Encode(e)) => {
                let _ = reply.send(Outcome::Done(Err(CallError::Encode(e))));
                Ok(())
            }
            Err(_) => {
                let _ = reply.send(Outcome::NotSent(request));
                Err(End::lost(ConnectionLost::SequenceExhausted))
            }
        }
    }
}
