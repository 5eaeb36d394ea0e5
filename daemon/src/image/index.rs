//! The in-memory image index: every image record of crid's namespace (name
//! → target, pinned, resolved metadata), grouped by image id, so that
//! ImageStatus and ListImages (the kubelet calls them before every
//! container start and for image GC) are answered without a containerd
//! round trip.
//!
//! It is filled from containerd's image store when crid starts and kept
//! current three ways:
//! - crid's own pulls and removals update it before they answer, so the
//!   kubelet never sees its own change late;
//! - containerd's `/images/*` events (someone used `ctr images`, or another
//!   client of the namespace) make the index re-read that one record;
//! - `/content/delete` events make it re-resolve the images whose index,
//!   manifest or config blob went away (an image with missing content is
//!   reported absent, so the kubelet pulls it again).
//!
//! Every event is handled by re-reading containerd's current state of that
//! name, so events handled late or twice cannot leave stale data behind.
//! A reload keeps the names changed while it read containerd (a pull that
//! answered meanwhile), as those entries are newer than what it read.
//! While the event stream is down (containerd restarting) the index is not
//! trusted: queries re-read the whole image store until the stream is back
//! and the index has been reloaded after it. Metadata is kept per target
//! digest only as long as a record points at it.

use super::reference::{is_bare_hex_id, is_digest, ImageRef};
use super::session::cerr;
use super::store::{ImageGroup, ImageMeta, ImageStore};
use crate::containerd::Containerd;
use crate::error::Error;
use crid_proto::containerd::events::ContentDelete;
use crid_proto::containerd::services::v1::events_client::EventsClient;
use crid_proto::containerd::services::v1::{
    Image, ImageCreate, ImageDelete, ImageUpdate, SubscribeRequest,
};
use prost::Message;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The label containerd's CRI plugin pins images with (the kubelet's image
/// GC leaves pinned images alone).
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned";

/// How long after sending the subscription the index is reloaded: containerd
/// answers the subscribe call only with its first event, so registration
/// cannot be observed directly (the same wait as the task event loop's).
const SUBSCRIBE_SETTLE: Duration = Duration::from_millis(300);
/// A full reload this often, a safety net for an event lost between the
/// reload and the subscription's registration.
const RELOAD_EVERY: Duration = Duration::from_secs(300);

/// One image record as the index keeps it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Digest of the record's target (index or manifest).
    pub target: String,
    /// The record carries [`PINNED_LABEL`].
    pub pinned: bool,
    /// Resolved metadata; None while the image's content is incomplete.
    pub meta: Option<Arc<ImageMeta>>,
}

impl Entry {
    /// The entry for containerd's record `rec`, with `meta` if resolved.
    pub fn of(rec: &Image, meta: Option<Arc<ImageMeta>>) -> Option<Entry> {
        let target = rec.target.as_ref()?;
        Some(Entry {
            target: target.digest.clone(),
            pinned: rec.labels.get(PINNED_LABEL).map(String::as_str) == Some("pinned"),
            meta,
        })
    }
}

/// The index's data: pure, no I/O.
#[derive(Debug, Default)]
pub struct IndexState {
    names: HashMap<String, Entry>,
    by_id: HashMap<String, BTreeSet<String>>,
    /// Names set or removed since a reload began listing containerd's
    /// records (None outside a reload): their entries here are at least as
    /// new as what the reload read.
    touched: Option<BTreeSet<String>>,
}

impl IndexState {
    /// Sets record `name`. Complete metadata also completes other records
    /// with the same target whose content was missing (a pull repaired it).
    pub fn set(&mut self, name: &str, entry: Entry) {
        self.remove(name);
        if let Some(t) = &mut self.touched {
            t.insert(name.to_string());
        }
        if let Some(meta) = &entry.meta {
            let repaired: Vec<String> = self
                .names
                .iter()
                .filter(|(_, e)| e.meta.is_none() && e.target == entry.target)
                .map(|(n, _)| n.clone())
                .collect();
            for n in repaired {
                if let Some(e) = self.names.get_mut(&n) {
                    e.meta = Some(Arc::clone(meta));
                }
                self.by_id.entry(meta.id.clone()).or_default().insert(n);
            }
            self.by_id
                .entry(meta.id.clone())
                .or_default()
                .insert(name.to_string());
        }
        self.names.insert(name.to_string(), entry);
    }

    /// Forgets record `name`.
    pub fn remove(&mut self, name: &str) -> Option<Entry> {
        if let Some(t) = &mut self.touched {
            t.insert(name.to_string());
        }
        let e = self.names.remove(name)?;
        if let Some(m) = &e.meta {
            if let Some(set) = self.by_id.get_mut(&m.id) {
                set.remove(name);
                if set.is_empty() {
                    self.by_id.remove(&m.id);
                }
            }
        }
        Some(e)
    }

    /// Metadata already resolved for `target`, if a record points at it.
    pub fn meta_for_target(&self, target: &str) -> Option<Arc<ImageMeta>> {
        self.names
            .values()
            .find(|e| e.target == target && e.meta.is_some())
            .and_then(|e| e.meta.clone())
    }

    /// The image `id` with its names (the record named by the id itself, as
    /// containerd's CRI plugin keeps one, is not a name).
    pub fn group(&self, id: &str) -> Option<ImageGroup> {
        let names = self.by_id.get(id)?;
        let mut meta = None;
        let mut pinned = false;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let Some(e) = self.names.get(n) else { continue };
            pinned |= e.pinned;
            if meta.is_none() {
                meta = e.meta.clone();
            }
            if n != id {
                out.push(n.clone());
            }
        }
        Some(ImageGroup {
            meta: meta?,
            names: out,
            pinned,
        })
    }

    /// Every complete image, ordered by id.
    pub fn groups(&self) -> Vec<ImageGroup> {
        let ids: BTreeSet<&String> = self.by_id.keys().collect();
        ids.into_iter().filter_map(|id| self.group(id)).collect()
    }

    /// The image a CRI image reference names: an id (`sha256:…` or bare
    /// hex) or a name (normalised). None if absent or incomplete.
    pub fn find(&self, reference: &str) -> Result<Option<ImageGroup>, Error> {
        if is_digest(reference) {
            return Ok(self.group(reference));
        }
        if is_bare_hex_id(reference) {
            return Ok(self.group(&format!("sha256:{reference}")));
        }
        let name = ImageRef::parse(reference)?.name();
        Ok(self
            .names
            .get(&name)
            .and_then(|e| e.meta.as_ref())
            .and_then(|m| self.group(&m.id)))
    }

    /// Every record name of image `id`, including one named by the id.
    pub fn names_of(&self, id: &str) -> Vec<String> {
        self.by_id
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Records that depend on blob `digest` as target, manifest or config.
    pub fn names_using(&self, digest: &str) -> Vec<String> {
        self.names
            .iter()
            .filter(|(_, e)| {
                e.target == digest
                    || e.meta
                        .as_ref()
                        .is_some_and(|m| m.id == digest || m.manifest == digest)
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// How many records are indexed.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Starts noting the names changed from now on (a reload begins).
    pub fn begin_reload(&mut self) {
        self.touched = Some(BTreeSet::new());
    }

    /// Replaces the state with `next`, read from containerd by a reload,
    /// except for names changed since [`IndexState::begin_reload`]: a pull
    /// that answered or an event handled meanwhile is not undone.
    pub fn finish_reload(&mut self, mut next: IndexState) {
        for name in self.touched.take().unwrap_or_default() {
            match self.names.get(&name) {
                Some(e) => next.set(&name, e.clone()),
                None => {
                    next.remove(&name);
                }
            }
        }
        next.touched = None;
        *self = next;
    }
}

/// The index with its containerd side.
pub struct ImageIndex {
    store: Arc<ImageStore>,
    state: RwLock<IndexState>,
    /// True while the event stream is up and the index was reloaded after
    /// it was established: only then are answers served from memory.
    live: AtomicBool,
    reloading: tokio::sync::Mutex<()>,
}

impl ImageIndex {
    /// An empty index over `store`; filled by [`ImageIndex::spawn_watch`] or
    /// by the first query.
    pub fn new(store: Arc<ImageStore>) -> ImageIndex {
        ImageIndex {
            store,
            state: RwLock::new(IndexState::default()),
            live: AtomicBool::new(false),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    fn read<T>(&self, f: impl FnOnce(&IndexState) -> T) -> Result<T, Error> {
        let g = self
            .state
            .read()
            .map_err(|_| Error::Internal("image index poisoned".into()))?;
        Ok(f(&g))
    }

    fn write<T>(&self, f: impl FnOnce(&mut IndexState) -> T) -> Result<T, Error> {
        let mut g = self
            .state
            .write()
            .map_err(|_| Error::Internal("image index poisoned".into()))?;
        Ok(f(&mut g))
    }

    /// Makes sure the index reflects containerd: a no-op while the event
    /// stream is live, else a full reload.
    async fn current(&self) -> Result<(), Error> {
        if self.live.load(Ordering::Acquire) {
            return Ok(());
        }
        let _one = self.reloading.lock().await;
        if self.live.load(Ordering::Acquire) {
            return Ok(());
        }
        self.reload().await
    }

    /// Every complete image, grouped by id.
    pub async fn groups(&self) -> Result<Vec<ImageGroup>, Error> {
        self.current().await?;
        self.read(IndexState::groups)
    }

    /// The image `reference` names (see [`IndexState::find`]).
    pub async fn find(&self, reference: &str) -> Result<Option<ImageGroup>, Error> {
        self.current().await?;
        self.read(|s| s.find(reference))?
    }

    /// Every record name of image `id`, including one named by the id.
    pub async fn names_of(&self, id: &str) -> Result<Vec<String>, Error> {
        self.current().await?;
        self.read(|s| s.names_of(id))
    }

    /// Records crid itself just wrote (a pull), with the metadata it knows.
    pub fn put(&self, name: &str, target: &str, meta: Arc<ImageMeta>) -> Result<(), Error> {
        self.write(|s| {
            s.set(
                name,
                Entry {
                    target: target.to_string(),
                    pinned: false,
                    meta: Some(meta),
                },
            )
        })
    }

    /// Forgets a record crid itself just deleted.
    pub fn forget(&self, name: &str) -> Result<(), Error> {
        self.write(|s| {
            s.remove(name);
        })
    }

    /// Resolves a record's metadata, reusing what the index has for its
    /// target unless `fresh`; None if its content is incomplete.
    async fn meta_of(&self, rec: &Image, fresh: bool) -> Option<Arc<ImageMeta>> {
        let target = rec.target.as_ref()?;
        if !fresh {
            if let Ok(Some(m)) = self.read(|s| s.meta_for_target(&target.digest)) {
                return Some(m);
            }
        }
        match self.store.resolve(target).await {
            Ok(m) => Some(Arc::new(m)),
            Err(e) => {
                tracing::debug!(image = %rec.name, error = %e, "image record without complete content");
                None
            }
        }
    }

    /// Re-reads the whole image store (metadata of known targets reused).
    #[tracing::instrument(level = "debug", skip_all)]
    /// Callers hold `reloading`.
    pub async fn reload(&self) -> Result<(), Error> {
        self.write(IndexState::begin_reload)?;
        let records = self.store.records().await?;
        let mut next = IndexState::default();
        let mut resolved: HashMap<String, Option<Arc<ImageMeta>>> = HashMap::new();
        for rec in &records {
            let Some(target) = &rec.target else { continue };
            let meta = match resolved.get(&target.digest) {
                Some(m) => m.clone(),
                None => {
                    let m = self.meta_of(rec, false).await;
                    resolved.insert(target.digest.clone(), m.clone());
                    m
                }
            };
            if let Some(e) = Entry::of(rec, meta) {
                next.set(&rec.name, e);
            }
        }
        let n = next.len();
        self.write(|s| s.finish_reload(next))?;
        tracing::debug!(records = n, "image index reloaded");
        Ok(())
    }

    /// Re-reads records from containerd (`fresh`: re-resolve their
    /// content) and applies them at once: the names of one image change
    /// together, never one answered before the others.
    pub async fn refresh(&self, names: &[String], fresh: bool) -> Result<(), Error> {
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let entry = match self.store.record(name).await? {
                None => None,
                Some(rec) => {
                    let meta = self.meta_of(&rec, fresh).await;
                    Entry::of(&rec, meta)
                }
            };
            entries.push((name, entry));
        }
        self.write(|s| {
            for (name, entry) in entries {
                match entry {
                    Some(e) => s.set(name, e),
                    None => {
                        s.remove(name);
                    }
                }
            }
        })
    }

    /// Follows containerd's image and content events for `namespace` until
    /// crid stops, reloading after every (re)subscription and now and then.
    pub fn spawn_watch(
        self: &Arc<Self>,
        ctrd: Containerd,
        namespace: String,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match this.follow(&ctrd, &namespace).await {
                    Ok(()) => tracing::warn!("containerd image event stream ended; resubscribing"),
                    Err(e) => tracing::debug!(error = %e, "containerd image events unavailable"),
                }
                this.live.store(false, Ordering::Release);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        })
    }

    async fn follow(self: &Arc<Self>, ctrd: &Containerd, ns: &str) -> Result<(), Error> {
        let filters = [
            "/images/create",
            "/images/update",
            "/images/delete",
            "/content/delete",
        ]
        .iter()
        .map(|t| format!("namespace=={ns},topic==\"{t}\""))
        .collect();
        let mut client = EventsClient::new(ctrd.channel());
        let subscribe = client.subscribe(SubscribeRequest { filters });
        tokio::pin!(subscribe);
        // The call answers with the first event only; reload meanwhile once
        // the request has had time to register.
        let first = tokio::select! {
            r = &mut subscribe => Some(r),
            _ = tokio::time::sleep(SUBSCRIBE_SETTLE) => None,
        };
        let mut stream = match first {
            Some(r) => r.map_err(cerr("events.subscribe"))?.into_inner(),
            None => {
                self.settle().await;
                subscribe
                    .await
                    .map_err(cerr("events.subscribe"))?
                    .into_inner()
            }
        };
        if !self.live.load(Ordering::Acquire) {
            self.settle().await;
        }
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.tick().await;
        loop {
            let env = tokio::select! {
                m = stream.message() => match m.map_err(cerr("events.stream"))? {
                    Some(env) => env,
                    None => return Ok(()),
                },
                _ = tick.tick() => {
                    let _one = self.reloading.lock().await;
                    if let Err(e) = self.reload().await {
                        tracing::warn!(error = %e, "periodic image index reload");
                    }
                    continue;
                }
            };
            if env.namespace != ns {
                continue;
            }
            let Some(ev) = env.event else { continue };
            let v = ev.value.as_slice();
            let (names, fresh) = match env.topic.as_str() {
                "/images/create" => (ImageCreate::decode(v).map(|e| vec![e.name]), false),
                "/images/update" => (ImageUpdate::decode(v).map(|e| vec![e.name]), false),
                "/images/delete" => (ImageDelete::decode(v).map(|e| vec![e.name]), false),
                "/content/delete" => (
                    ContentDelete::decode(v)
                        .map(|e| self.read(|s| s.names_using(&e.digest)).unwrap_or_default()),
                    true,
                ),
                _ => continue,
            };
            let Ok(names) = names else {
                tracing::warn!(topic = %env.topic, "undecodable containerd event");
                continue;
            };
            for name in &names {
                tracing::debug!(image = %name, topic = %env.topic, "image changed in containerd");
            }
            if let Err(e) = self.refresh(&names, fresh).await {
                // Not trusted any more: reload on the next query.
                tracing::warn!(images = ?names, error = %e, "refreshing image records");
                self.live.store(false, Ordering::Release);
            }
        }
    }

    /// Reloads after the subscription was registered; live once it worked.
    async fn settle(&self) {
        let _one = self.reloading.lock().await;
        match self.reload().await {
            Ok(()) => self.live.store(true, Ordering::Release),
            Err(e) => tracing::warn!(error = %e, "loading the image index"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const ID_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn meta(id: &str, manifest: &str) -> Arc<ImageMeta> {
        Arc::new(ImageMeta {
            id: id.into(),
            size: 42,
            config_raw: vec![],
            user: Some("1000".into()),
            chain_id: None,
            manifest: manifest.into(),
        })
    }

    fn entry(target: &str, m: Option<Arc<ImageMeta>>) -> Entry {
        Entry {
            target: target.into(),
            pinned: false,
            meta: m,
        }
    }

    #[test]
    fn a_reload_keeps_changes_made_while_it_read_containerd() {
        let mut live = IndexState::default();
        live.set("old", entry("t0", Some(meta(ID_B, "m0"))));
        live.set("gone", entry("t0", Some(meta(ID_B, "m0"))));
        live.begin_reload();
        // Meanwhile: a pull answers with two names, a removal forgets one.
        live.set("reg.example/a:1", entry("t1", Some(meta(ID_A, "m1"))));
        live.set(
            "reg.example/a@sha256:1",
            entry("t1", Some(meta(ID_A, "m1"))),
        );
        live.remove("gone");
        // The reload listed containerd before the pull's tag record and the removal.
        let mut read = IndexState::default();
        read.set("old", entry("t0", Some(meta(ID_B, "m0"))));
        read.set("gone", entry("t0", Some(meta(ID_B, "m0"))));
        read.set(
            "reg.example/a@sha256:1",
            entry("t1", Some(meta(ID_A, "m1"))),
        );
        live.finish_reload(read);
        assert_eq!(
            live.find("reg.example/a:1").unwrap().unwrap().names,
            vec!["reg.example/a:1", "reg.example/a@sha256:1"]
        );
        assert_eq!(live.names_of(ID_B), vec!["old"]);
        assert_eq!(live.len(), 3);
        // Outside a reload nothing is noted.
        live.set("later", entry("t0", Some(meta(ID_B, "m0"))));
        assert!(live.touched.is_none());
    }

    #[test]
    fn names_group_by_id_and_the_id_record_is_no_name() {
        let mut s = IndexState::default();
        let a = meta(ID_A, "sha256:ma");
        s.set("docker.io/library/a:1", entry("sha256:ta", Some(a.clone())));
        s.set(
            "docker.io/library/a@sha256:ta",
            entry("sha256:ta", Some(a.clone())),
        );
        s.set(ID_A, entry("sha256:ta", Some(a)));
        s.set(
            "r:5000/b:1",
            entry("sha256:tb", Some(meta(ID_B, "sha256:tb"))),
        );
        let groups = s.groups();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].meta.id, ID_A);
        assert_eq!(
            groups[0].names,
            vec!["docker.io/library/a:1", "docker.io/library/a@sha256:ta"]
        );
        assert_eq!(
            s.names_of(ID_A).len(),
            3,
            "removal covers the id record too"
        );
        // By tag (normalised), by id, by bare hex id.
        assert_eq!(s.find("a:1").unwrap().unwrap().meta.id, ID_A);
        assert_eq!(s.find(ID_A).unwrap().unwrap().names.len(), 2);
        assert_eq!(
            s.find(&ID_B[7..]).unwrap().unwrap().names,
            vec!["r:5000/b:1"]
        );
        assert!(s.find("a:2").unwrap().is_none());
        assert!(s.find("BAD REF").is_err());
    }

    #[test]
    fn removing_the_last_name_drops_the_image_and_its_metadata() {
        let mut s = IndexState::default();
        s.set("a:1", entry("sha256:ta", Some(meta(ID_A, "sha256:ta"))));
        s.set("a:2", entry("sha256:ta", Some(meta(ID_A, "sha256:ta"))));
        s.remove("docker.io/library/a:1");
        s.remove("a:1");
        assert_eq!(s.group(ID_A).unwrap().names, vec!["a:2"]);
        s.remove("a:2");
        assert!(s.group(ID_A).is_none());
        assert!(s.meta_for_target("sha256:ta").is_none());
        assert!(s.groups().is_empty());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn retagging_moves_a_name_to_the_new_image() {
        let mut s = IndexState::default();
        s.set(
            "r.io/x:1",
            entry("sha256:ta", Some(meta(ID_A, "sha256:ta"))),
        );
        s.set(
            "r.io/x:1",
            entry("sha256:tb", Some(meta(ID_B, "sha256:tb"))),
        );
        assert!(s.group(ID_A).is_none());
        assert_eq!(s.find("r.io/x:1").unwrap().unwrap().meta.id, ID_B);
    }

    #[test]
    fn incomplete_records_are_absent_until_a_pull_repairs_them() {
        let mut s = IndexState::default();
        s.set("r.io/a:1", entry("sha256:ta", None));
        s.set("r.io/a:2", entry("sha256:ta", None));
        assert!(s.find("r.io/a:1").unwrap().is_none());
        assert!(s.groups().is_empty());
        // A pull of a:1 resolves the shared target: a:2 is complete too.
        s.set(
            "r.io/a:1",
            entry("sha256:ta", Some(meta(ID_A, "sha256:ma"))),
        );
        assert_eq!(
            s.find("r.io/a:2").unwrap().unwrap().names,
            vec!["r.io/a:1", "r.io/a:2"]
        );
    }

    #[test]
    fn blobs_are_traced_back_to_their_records() {
        let mut s = IndexState::default();
        s.set(
            "r.io/a:1",
            entry("sha256:idx", Some(meta(ID_A, "sha256:man"))),
        );
        s.set("b:1", entry("sha256:tb", Some(meta(ID_B, "sha256:tb"))));
        for d in ["sha256:idx", "sha256:man", ID_A] {
            assert_eq!(s.names_using(d), vec!["r.io/a:1"], "{d}");
        }
        assert!(s.names_using("sha256:layer").is_empty());
    }

    #[test]
    fn pinned_comes_from_any_record_of_the_image() {
        let mut s = IndexState::default();
        let rec = Image {
            name: "r.io/p:1".into(),
            labels: HashMap::from([(PINNED_LABEL.to_string(), "pinned".to_string())]),
            target: Some(crid_proto::containerd::types::Descriptor {
                digest: "sha256:tp".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = meta(ID_A, "sha256:tp");
        s.set("r.io/p:1", Entry::of(&rec, Some(m.clone())).unwrap());
        s.set("r.io/p:2", entry("sha256:tp", Some(m)));
        assert!(s.find("r.io/p:2").unwrap().unwrap().pinned);
        let untargeted = Image {
            name: "x".into(),
            ..Default::default()
        };
        assert!(Entry::of(&untargeted, None).is_none());
    }
}
