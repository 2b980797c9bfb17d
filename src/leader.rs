//! Leader election on a `coordination.k8s.io` Lease: the replica holding the
//! lease reconciles and manages signing keys; every replica serves HTTP.
//!
//! The holder renews every third of the lease duration. It stops its work
//! once it has failed to renew for two thirds of the duration, before any
//! other replica may take over (after the full duration), so two leaders
//! never write at once. On shutdown the holder releases the lease, so the
//! next leader need not wait.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tracing::{info, warn};

/// What to do about a lease, seen at `now`.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody has ever held it.
    Create,
    /// We hold it: renew.
    Renew,
    /// It is free or expired: take it over.
    Acquire,
    /// Someone else holds it.
    Follow,
}

pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) => {
            let duration =
                SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
            let expired = spec
                .renew_time
                .as_ref()
                .is_none_or(|renewed| renewed.0 + duration <= now);
            if expired {
                Decision::Acquire
            } else {
                Decision::Follow
            }
        }
    }
}

pub struct Elector {
    pub api: Api<Lease>,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

impl Elector {
    /// One round: whether we hold the lease afterwards.
    async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let existing = self.api.get_opt(&self.name).await?;
        let decision = decide(
            existing.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        let spec = |acquired: Option<MicroTime>, transitions: i32| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: acquired,
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let result = match (decision, existing) {
            (Decision::Follow, _) => return Ok(false),
            (Decision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec(Some(MicroTime(now)), 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let old = lease.spec.take().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0);
                lease.spec = Some(if decision == Decision::Renew {
                    spec(old.acquire_time, transitions)
                } else {
                    spec(Some(MicroTime(now)), transitions + 1)
                });
                // resourceVersion is kept: a concurrent writer makes this 409.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if we hold it.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.name, "released leadership"),
            Err(e) => warn!(lease = %self.name, error = %e, "releasing the lease failed"),
        }
    }

    /// Runs `work` whenever this replica leads, until `shutdown` resolves;
    /// then stops the work and releases the lease.
    pub async fn run(
        self,
        work: impl Fn() -> BoxFuture<'static, ()>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut task: Option<tokio::task::JoinHandle<()>> = None;
        let mut last_renewed = Instant::now();
        let step = self.duration / 3;
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    last_renewed = Instant::now();
                    if task.is_none() {
                        info!(lease = %self.name, identity = %self.identity, "became leader");
                        task = Some(tokio::spawn(work()));
                    }
                }
                Ok(false) => {
                    if task.is_some() {
                        warn!(lease = %self.name, "another replica holds the lease; stepping down");
                        if let Some(t) = task.take() {
                            t.abort();
                        }
                    }
                }
                Err(e) => warn!(lease = %self.name, error = %e, "lease request failed"),
            }
            // Stop writing before anyone else may take over.
            if task.is_some() && last_renewed.elapsed() > self.duration * 2 / 3 {
                warn!(lease = %self.name, "could not renew the lease in time; stepping down");
                if let Some(t) = task.take() {
                    t.abort();
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = &mut shutdown => break,
            }
        }
        if let Some(t) = task.take() {
            t.abort();
            let _ = t.await;
            self.release().await;
        }
    }
}

/// This process's identity in the lease: the pod name, or host and pid.
pub fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", at(0)), Decision::Create);
        assert_eq!(
            decide(Some(&held_by("a", 0)), "a", at(100)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&held_by("b", 0)), "a", at(14)),
            Decision::Follow
        );
        assert_eq!(
            decide(Some(&held_by("b", 0)), "a", at(15)),
            Decision::Acquire
        );
        let released = LeaseSpec {
            holder_identity: None,
            ..held_by("b", 0)
        };
        assert_eq!(decide(Some(&released), "a", at(1)), Decision::Acquire);
    }
}
