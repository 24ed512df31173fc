//! [`MailDeliverer`]: the boundary between the queue's worker and the
//! network. The worker decides *when* and *in which order*; a deliverer
//! makes one attempt and says, per recipient, how it ended. The real one is
//! [`super::network::NetworkDeliverer`]; tests put a fake here.

use futures::future::BoxFuture;

/// How one attempt ended for one recipient (or one article).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A server took responsibility for it (SMTP `250` to `RCPT` and the
    /// data; an NNTP `240`): the recipient is done.
    Delivered,
    /// Not now (a `4xx`, no server reachable, a lookup that failed): tried
    /// again later, until the message's lifetime ends.
    Transient,
    /// Never (a `5xx`, a domain without mail servers, servers only at
    /// addresses the exit does not connect to): the recipient is dropped.
    /// Nobody is told: there is no sender to bounce to.
    Permanent,
}

/// Makes one delivery attempt. Implementations bound their own waits
/// (connection and command timeouts) and never log a message, an address
/// or a server.
pub trait MailDeliverer: Send + Sync + 'static {
    /// Sends `message` to `recipients`, all at `domain` (lower case), in one
    /// SMTP transaction where it can. One outcome per recipient, in order;
    /// a recipient without one counts as [`Outcome::Transient`].
    fn send<'a>(&'a self, domain: &'a str, recipients: &'a [String], message: &'a [u8]) -> BoxFuture<'a, Vec<Outcome>>;

    /// Posts `article` (its `Newsgroups` field names the groups) to the
    /// news server.
    fn post<'a>(&'a self, article: &'a [u8]) -> BoxFuture<'a, Outcome>;
}
