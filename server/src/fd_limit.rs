//! The process's open-file limit: one descriptor per connection, so the server raises its
//! soft `RLIMIT_NOFILE` to the hard limit at start (the soft limit is often 1,024 while
//! `--max-connections` defaults to 10,000) and tells the caller what it did, so the binary can
//! warn when the limit is still below what its settings need ([`NofileLimit::covers`]).

use rlimit::Resource;

/// Descriptors the server needs besides one per connection: standard streams, the listener,
/// the metrics listener and its connections, the poller, keyring reloads, log files.
pub const FD_MARGIN: u64 = 64;

/// Descriptors a server that allows `max_connections` connections needs: one per connection
/// plus [`FD_MARGIN`].
pub fn fds_needed(max_connections: usize) -> u64 {
    u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(FD_MARGIN)
}

/// What [`raise_nofile_limit`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit before the call.
    pub before: u64,
    /// The soft limit now: the limit in force.
    pub soft: u64,
    /// The hard limit (the most the soft limit can be raised to without privileges).
    pub hard: u64,
}

impl NofileLimit {
    /// Whether the call raised the soft limit.
    pub fn raised(&self) -> bool {
        self.soft > self.before
    }

    /// Whether the limit in force allows `needed` open descriptors (see [`fds_needed`]).
    pub fn covers(&self, needed: u64) -> bool {
        self.soft >= needed
    }
}

/// Why the limit could not be read or raised.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FdLimitError {
    /// `getrlimit(RLIMIT_NOFILE)` failed.
    #[error("cannot read the open-file limit (RLIMIT_NOFILE): {0}")]
    Read(#[source] std::io::Error),
    /// `setrlimit(RLIMIT_NOFILE)` failed.
    #[error("cannot raise the open-file limit (RLIMIT_NOFILE) from {from} to {to}: {source}")]
    Raise {
        /// The soft limit, unchanged.
        from: u64,
        /// The soft limit asked for (the hard limit).
        to: u64,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Raises the soft `RLIMIT_NOFILE` of this process to its hard limit, if it is below, and
/// returns the limits before and after. A soft limit already at the hard limit is left alone.
pub fn raise_nofile_limit() -> Result<NofileLimit, FdLimitError> {
    let (soft, hard) = Resource::NOFILE.get().map_err(FdLimitError::Read)?;
    if soft >= hard {
        return Ok(NofileLimit {
            before: soft,
            soft,
            hard,
        });
    }
    Resource::NOFILE
        .set(hard, hard)
        .map_err(|source| FdLimitError::Raise {
            from: soft,
            to: hard,
            source,
        })?;
    let (now, hard) = Resource::NOFILE.get().map_err(FdLimitError::Read)?;
    Ok(NofileLimit {
        before: soft,
        soft: now,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_a_lowered_soft_limit_to_the_hard_limit_and_then_leaves_it() {
        let (_, hard) = Resource::NOFILE.get().unwrap();
        // Lower the soft limit first (as a shell's default of 1,024 would), if there is room.
        let low = hard.min(1024);
        Resource::NOFILE.set(low, hard).unwrap();

        let first = raise_nofile_limit().unwrap();
        assert_eq!(first.before, low);
        assert_eq!(first.soft, hard);
        assert_eq!(first.hard, hard);
        assert_eq!(first.raised(), low < hard);
        assert_eq!(Resource::NOFILE.get().unwrap(), (hard, hard));

        let again = raise_nofile_limit().unwrap();
        assert!(!again.raised());
        assert_eq!((again.before, again.soft, again.hard), (hard, hard, hard));
    }

    #[test]
    fn covers_compares_the_soft_limit_with_what_the_settings_need() {
        let limit = NofileLimit {
            before: 1024,
            soft: 1024,
            hard: 1024,
        };
        assert_eq!(fds_needed(10_000), 10_064);
        assert!(!limit.covers(fds_needed(10_000)));
        assert!(limit.covers(fds_needed(960)));
        assert!(!limit.covers(fds_needed(961)));
        assert_eq!(fds_needed(usize::MAX), u64::MAX);
    }
}
