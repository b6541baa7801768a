//! The drill's client: puts contracts of various sizes for a few tenants,
//! destroys some, and records every request with its outcome at simulated
//! times. Like the platform's clients it sends each write to a site it can
//! reach and follows the "not the owner" redirect.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tandem_net::Transport;
use tandem_replicator::client::ReplicatorClient;
use tandem_replicator::write::PutHeader;

use crate::cluster::{replicator_addr, site_names};
use crate::scenario::Workload;
use crate::trace::Trace;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum OpKind {
    Put,
    Destroy,
}

/// One request and its outcome.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Op {
    pub n: u64,
    pub kind: OpKind,
    pub tenant: String,
    pub contract_id: String,
    /// Bytes of the put's one file (0 for a destroy): with `n` it
    /// regenerates what the client sent ([`body`], [`id_card`]).
    #[serde(default)]
    pub size: usize,
    pub sent_ms: u64,
    pub done_ms: u64,
    /// The acknowledgement, or why there was none.
    pub result: Result<Ack, String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Ack {
    pub origin: String,
    pub epoch: u64,
    pub version: u64,
    pub shard: u32,
    /// The owner's clock when it accepted the write.
    pub accepted_unix_ms: u64,
}

#[derive(Clone, Default)]
pub struct History {
    ops: Arc<Mutex<Vec<Op>>>,
}

impl History {
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn push(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }
}

pub fn tenant(i: u32) -> String {
    format!("tenant-{i}")
}

/// A file body that is the same for the same request in every run.
pub fn body(n: u64, size: usize) -> Bytes {
    let mut b = Vec::with_capacity(size);
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while b.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.extend_from_slice(&x.to_le_bytes());
    }
    b.truncate(size);
    Bytes::from(b)
}

/// The ID-card number request `n` stores as an SM4-sealed PII field
/// (synthetic: 18 digits that are the same in every run).
pub fn id_card(n: u64) -> String {
    format!("110105{:012}", n.wrapping_mul(7_919) % 1_000_000_000_000)
}

/// The name of the PII field every put carries.
pub const PII_FIELD: &str = "id_card";

fn ms() -> u64 {
    crate::trace::now().as_millis() as u64
}

/// Client-side faults a scenario switches on and off while the workload
/// runs (event `duplicate_requests`).
#[derive(Clone, Default)]
pub struct ClientFaults {
    /// Per mille of acknowledged puts sent again, as a client that lost
    /// the reply (a timeout, a reset connection) retries.
    duplicate_per_mille: Arc<std::sync::atomic::AtomicU32>,
}

impl ClientFaults {
    pub fn set_duplicates(&self, rate: f64) {
        let per_mille = (rate.clamp(0.0, 1.0) * 1000.0).round() as u32;
        self.duplicate_per_mille.store(per_mille, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether request `n` is delivered twice. Drawn from `n` alone (a
    /// fixed hash), so the same seed duplicates the same requests.
    fn duplicates(&self, n: u64) -> bool {
        let per_mille = self.duplicate_per_mille.load(std::sync::atomic::Ordering::SeqCst) as u64;
        per_mille > 0 && (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 1000 < per_mille
    }
}

/// Runs the workload until `until` of simulated time: `w.clients`
/// concurrent request loops sharing one request counter.
pub async fn run(w: Workload, until: Duration, history: History, trace: Trace, faults: ClientFaults) -> turmoil::Result {
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // One client library for the host's loops, as in one application process.
    let router = Arc::new(Mutex::new(Router { sticky: w.sticky, ..Default::default() }));
    let loops: Vec<_> = (0..w.clients.max(1))
        .map(|_| tokio::spawn(one_client(w.clone(), until, history.clone(), trace.clone(), counter.clone(), router.clone(), faults.clone())))
        .collect();
    for l in loops {
        l.await?;
    }
    Ok(())
}

async fn one_client(
    w: Workload,
    until: Duration,
    history: History,
    trace: Trace,
    counter: Arc<std::sync::atomic::AtomicU64>,
    router: Arc<Mutex<Router>>,
    faults: ClientFaults,
) {
    // The platform's client library knows every site: it tries the next
    // when one has had no write lease for a lease.
    let client = ReplicatorClient::new(Transport::Turmoil, Duration::from_secs(5)).with_sites_to_try();
    let mut acked: Vec<(String, String)> = Vec::new();
    let timeout = Duration::from_millis(w.request_timeout_ms);
    while crate::trace::now() < until {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let destroy = w.destroy_every > 0 && n.is_multiple_of(w.destroy_every as u64) && !acked.is_empty();
        let sent_ms = ms();
        let op = if destroy {
            let (tenant, id) = acked.remove((n as usize * 7) % acked.len());
            let order = lock(&router).order(&tenant);
            let result = first_site(timeout, &order, &router, |addr| {
                let (client, tenant, id) = (&client, tenant.clone(), id.clone());
                async move {
                    match client.destroy(&addr, &tenant, &id, "drill", "destroy request in the workload", 0).await {
                        // An earlier try timed out but took effect: done.
                        Err(e) if e.code() == Some(tandem_proto::error_code::DESTROYED) => Ok(()),
                        other => other.map(|_| ()),
                    }
                }
            })
            .await
            .map(|(_, ())| Ack { origin: String::new(), epoch: 0, version: 0, shard: 0, accepted_unix_ms: 0 });
            Op { n, kind: OpKind::Destroy, tenant, contract_id: id, size: 0, sent_ms, done_ms: ms(), result }
        } else {
            let tenant = tenant((n % w.tenants as u64) as u32);
            let id = format!("c{n}");
            let size = w.sizes[(n as usize) % w.sizes.len()];
            let header =
                PutHeader { tenant: tenant.clone(), contract_id: id.clone(), pii_fields: [(PII_FIELD.to_string(), id_card(n))].into(), ..Default::default() };
            let files = vec![("deed.pdf".to_string(), body(n, size))];
            let put = || async {
                let order = lock(&router).order(&tenant);
                let result = first_site(timeout, &order, &router, |addr| {
                    let (client, header, files) = (&client, header.clone(), files.clone());
                    async move {
                        let r = client.put_bytes(&addr, &header, &files).await?;
                        Ok(r.contract.map(|c| Ack {
                            origin: c.origin,
                            epoch: c.epoch,
                            version: c.version,
                            shard: c.shard,
                            accepted_unix_ms: c.created_unix_ms,
                        }))
                    }
                })
                .await
                .and_then(|(_, a)| a.ok_or_else(|| "the reply described no contract".to_string()));
                if let Ok(a) = &result {
                    lock(&router).owner_is(&tenant, &a.origin);
                }
                result
            };
            let (mut sent_ms, mut result) = (sent_ms, put().await);
            if result.is_ok() {
                acked.push((tenant.clone(), id.clone()));
                if faults.duplicates(n) {
                    // The reply was lost: the client sends the same put again.
                    // It is a second acknowledged version of the same bytes,
                    // and every check holds it to what the first one is held to.
                    let first = Op { n, kind: OpKind::Put, tenant: tenant.clone(), contract_id: id.clone(), size, sent_ms, done_ms: ms(), result };
                    trace.record(crate::trace::now(), format!("client Put {}/{} delivered twice (reply lost, retried)", first.tenant, first.contract_id));
                    history.push(first);
                    sent_ms = ms();
                    result = put().await;
                }
            }
            Op { n, kind: OpKind::Put, tenant, contract_id: id, size, sent_ms, done_ms: ms(), result }
        };
        trace.record(
            crate::trace::now(),
            match &op.result {
                Ok(a) => format!("client {:?} {}/{} ok at {} epoch {} v{}", op.kind, op.tenant, op.contract_id, a.origin, a.epoch, a.version),
                Err(e) => format!("client {:?} {}/{} failed: {e}", op.kind, op.tenant, op.contract_id),
            },
        );
        history.push(op);
        tokio::time::sleep(Duration::from_millis(w.interval_ms)).await;
    }
}

/// Where a client sends its next request, as the platform's client library
/// does: to the site that last acknowledged one of the tenant's writes (its
/// owner, as far as the client knows), then the others; a site that did
/// not answer is tried last for [`AVOID_FOR`], so one dead site costs one
/// timeout, not one per request.
#[derive(Default)]
struct Router {
    /// `false`: always a, b, c (see `Workload::sticky`).
    sticky: bool,
    owner: std::collections::BTreeMap<String, String>,
    avoid_until_ms: std::collections::BTreeMap<String, u64>,
}

fn lock(router: &Mutex<Router>) -> std::sync::MutexGuard<'_, Router> {
    router.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a site that did not answer is tried last.
const AVOID_FOR: Duration = Duration::from_secs(2);

impl Router {
    fn order(&self, tenant: &str) -> Vec<&'static str> {
        let now = ms();
        let mut sites = site_names();
        if !self.sticky {
            return sites;
        }
        // Stable: owner first, then the others in site order; avoided last.
        sites.sort_by_key(|s| {
            let avoided = self.avoid_until_ms.get(*s).is_some_and(|t| *t > now);
            let owner = self.owner.get(tenant).is_some_and(|o| o == s);
            (avoided, !owner)
        });
        sites
    }

    fn owner_is(&mut self, tenant: &str, site: &str) {
        self.owner.insert(tenant.to_string(), site.to_string());
    }

    fn did_not_answer(&mut self, site: &str) {
        self.avoid_until_ms.insert(site.to_string(), ms() + AVOID_FOR.as_millis() as u64);
    }
}

/// Tries the sites in `order` until one accepts (a site that cannot
/// write, has no lease or does not answer sends the client on, as the
/// platform's clients do). Each try is bounded by `timeout`: turmoil's
/// TCP does not retransmit, so a request across a lossy link could
/// otherwise wait forever.
async fn first_site<T, F, Fut>(timeout: Duration, order: &[&'static str], router: &Mutex<Router>, call: F) -> Result<(&'static str, T), String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, tandem_replicator::client::ClientError>>,
{
    let mut last = String::new();
    for site in order {
        match tokio::time::timeout(timeout, call(replicator_addr(site))).await {
            Ok(Ok(v)) => return Ok((site, v)),
            Ok(Err(tandem_replicator::client::ClientError::Unreachable { addr, reason })) => {
                // The site asked, or the owner it sent the client on to.
                let silent = site_names().into_iter().find(|s| replicator_addr(s) == addr).unwrap_or(site);
                lock(router).did_not_answer(silent);
                last = format!("{site} unreachable: {reason}");
            }
            Ok(Err(e)) => last = format!("{site}: {e}"),
            Err(_) => {
                lock(router).did_not_answer(site);
                last = format!("{site}: no answer within {} ms", timeout.as_millis());
            }
        }
    }
    Err(last)
}
