//! Resharding: starting on a data dir with a new SHARD_LIMIT moves every key, document and counter to its new
//! shard before the server is ready, and a kill at any step of it loses and duplicates nothing, whichever count
//! the next start asks for. A changed shard count must never cost data or serve a key from the wrong shard.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{client, temp_dir, Shale, TestServer};
use shale::command::Space;
use shale::engine::durability::Log;
use shale::engine::schema::shard_file;
use shale::engine::store::Store;
use shale::placement::{shard_for, ShardId};
use shale::Config;

/// (space, key) -> (content type as stored, value bytes).
type Contents = BTreeMap<(u8, Vec<u8>), (Vec<u8>, Vec<u8>)>;

/// Fills a data dir with mixed data through the HTTP API and returns what it should contain.
fn populate(dir: &Path, shards: u32) -> Contents {
    let mut config = Config::for_test(dir);
    config.shards = shards;
    let server = TestServer::start(config);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let base = server.base();
    rt.block_on(async move {
        let c = client();
        let mut jobs = Vec::new();
        for i in 0..2_000u32 {
            let (c, base) = (c.clone(), base.clone());
            jobs.push(tokio::spawn(async move {
                let mut req = c.put(format!("{base}/kv/item/{i:05}")).body(format!("value-{i}"));
                if i % 3 == 0 {
                    req = req.header("content-type", "text/plain");
                }
                assert!(req.send().await.unwrap().status().is_success());
                if i % 10 == 0 {
                    assert_eq!(c.delete(format!("{base}/kv/item/{i:05}")).send().await.unwrap().status(), 204);
                }
            }));
            if jobs.len() >= 64 {
                for j in jobs.drain(..) {
                    j.await.unwrap();
                }
            }
        }
        for i in 0..300u32 {
            let body = serde_json::json!({"id": null, "data": {"n": i, "tags": ["a", "b"]}});
            assert_eq!(c.post(format!("{base}/api")).json(&body).send().await.unwrap().status(), 200);
        }
        for i in 0..100u32 {
            let r = c.post(format!("{base}/counter/ctr-{i}")).body((i as i64 - 50).to_string()).send().await.unwrap();
            assert_eq!(r.status(), 204);
        }
        for j in jobs {
            j.await.unwrap();
        }
    });
    server.stop();
    read_all(dir, shards)
}

/// Reads every record of a closed data dir, checking that each sits in the shard placement says.
fn read_all(dir: &Path, shards: u32) -> Contents {
    let m = shale::ops::manifest::read(dir).unwrap().expect("manifest");
    assert_eq!(m.shards, shards, "manifest shard count");
    assert!(m.reshard.is_none(), "no resharding left pending: {:?}", m.reshard);
    let mut all = Contents::new();
    for i in 0..shards {
        let store = Store::open(shard_file(dir, ShardId(i)), ShardId(i), 8 << 20, Log::Off).unwrap();
        for space in Space::ALL {
            store
                .scan(space, |k, rec| {
                    assert_eq!(shard_for(k, shards), ShardId(i), "key {k:?} of {space:?} is in the wrong shard");
                    let dup =
                        all.insert((space as u8, k.to_vec()), (rec.content_type_raw().to_vec(), rec.value().to_vec()));
                    assert!(dup.is_none(), "key {k:?} is in two shards");
                    true
                })
                .unwrap();
        }
        store.close();
    }
    let names: Vec<_> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("shard-") && n.ends_with(".redb")).count(),
        shards as usize,
        "shard files: {names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("reshard.")), "side dirs left behind: {names:?}");
    all
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Starts the real binary on `dir` with `shards`, waits until ready, checks a few reads over HTTP, stops it.
fn serve_and_check(dir: &Path, shards: u32, expected: &Contents) {
    let server = Shale::serve(dir).args(["--shards", &shards.to_string()]).start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        common::wait_ready(&server.base()).await;
        let c = client();
        let v = c.get(server.url("/kv/item/00001")).send().await.unwrap().text().await.unwrap();
        assert_eq!(v, "value-1");
        assert_eq!(c.get(server.url("/kv/item/00010")).send().await.unwrap().status(), 404);
        let v = c.get(server.url("/counter/ctr-99/value")).send().await.unwrap().text().await.unwrap();
        assert_eq!(v, "49");
        let keys: serde_json::Value =
            c.get(server.url("/kv?prefix=item/&limit=10000")).send().await.unwrap().json().await.unwrap();
        let kv = expected.keys().filter(|(s, _)| *s == Space::Kv as u8).count();
        assert_eq!(keys["keys"].as_array().unwrap().len(), kv);
        // The next document id is above every id handed out before.
        let doc: serde_json::Value = c
            .post(server.url("/api"))
            .json(&serde_json::json!({"id": null, "data": 0}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(doc["id"].as_u64().unwrap() > 300, "{doc}");
    });
    let (status, stderr) = server.terminate();
    assert!(status.success(), "{stderr}");
}

fn without_new_doc(mut c: Contents) -> Contents {
    // serve_and_check creates one document; drop ids above the populated ones before comparing.
    c.retain(|(s, k), _| *s != Space::Doc as u8 || u64::from_be_bytes(k.as_slice().try_into().unwrap()) <= 300);
    c
}

#[test]
fn reshard_4_to_7_to_2_keeps_every_value_in_its_place() {
    let dir = temp_dir();
    let expected = populate(dir.path(), 4);
    assert_eq!(expected.len(), 2_000 - 200 + 300 + 100);
    for shards in [7, 2] {
        serve_and_check(dir.path(), shards, &expected);
        assert_eq!(without_new_doc(read_all(dir.path(), shards)), expected, "after resharding to {shards}");
    }
}

#[test]
fn a_kill_at_any_step_of_a_reshard_loses_nothing() {
    let seed = temp_dir();
    let expected = populate(seed.path(), 4);
    for (n, point) in shale::ops::reshard::FAULT_POINTS.iter().enumerate() {
        let dir = temp_dir();
        copy_dir(seed.path(), dir.path());
        let crashed =
            Shale::serve(dir.path()).args(["--shards", "7"]).env("SHALE_FAULT", point).run(Duration::from_secs(60));
        assert!(!crashed.status.success(), "{point}: the fault did not fire\n{}", crashed.stderr);
        assert!(crashed.stderr.contains(&format!("fault injected at {point}")), "{point}: {}", crashed.stderr);
        // Restart alternately with the new and the old count: both must end complete and in place.
        let again = if n % 2 == 0 { 7 } else { 4 };
        serve_and_check(dir.path(), again, &expected);
        assert_eq!(without_new_doc(read_all(dir.path(), again)), expected, "killed at {point}, restarted with {again}");
    }
}

/// A data dir laid out by placement 1 (the whole key hashed, no hash tags) is re-placed at start-up: every key,
/// tagged or not, is found afterwards and sits where placement 2 puts it.
#[test]
fn a_placement_1_data_dir_is_re_placed_at_start() {
    let dir = temp_dir();
    let keys: Vec<String> = (0..40).map(|i| format!("{{user:{i}}}:name")).chain(["plain/key".to_string()]).collect();
    let server = TestServer::start(Config::for_test(dir.path()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let c = client();
        for k in &keys {
            let url = server.url(&format!("/kv/{}", k.replace('{', "%7B").replace('}', "%7D")));
            assert!(c.put(url).body(format!("v-{k}")).send().await.unwrap().status().is_success());
        }
    });
    server.stop();

    // Rewrite the layout as placement 1 left it: each record in the shard of its whole key's hash.
    let shards = 4;
    let v1 =
        |k: &[u8]| ShardId((shale::placement::key_hash(k) >> (64 - shale::placement::PARTITION_BITS)) as u32 % shards);
    let stores: Vec<Store> = (0..shards)
        .map(|i| Store::open(shard_file(dir.path(), ShardId(i)), ShardId(i), 8 << 20, Log::Off).unwrap())
        .collect();
    let mut moved = 0;
    for (i, store) in stores.iter().enumerate() {
        let mut leaving = Vec::new();
        store
            .scan(Space::Kv, |k, rec| {
                if v1(k) != ShardId(i as u32) {
                    leaving.push((bytes::Bytes::copy_from_slice(k), rec.value()));
                }
                true
            })
            .unwrap();
        for (k, v) in leaving {
            let put = shale::command::Command::Put {
                space: Space::Kv,
                key: k.clone(),
                value: v,
                content_type: bytes::Bytes::new(),
                precondition: Default::default(),
                skip_if_unchanged: false,
            };
            let target = &stores[v1(&k).0 as usize];
            let mut rev = target.last_rev().unwrap() + 1;
            target.apply_batch([put].iter(), &mut rev, true).unwrap();
            let del = shale::command::Command::Delete { space: Space::Kv, key: k, precondition: Default::default() };
            let mut rev = store.last_rev().unwrap() + 1;
            store.apply_batch([del].iter(), &mut rev, true).unwrap();
            moved += 1;
        }
    }
    stores.into_iter().for_each(|s| s.close());
    assert!(moved > 0, "some tagged key must sit elsewhere under placement 1, or this test proves nothing");
    let manifest = shale::ops::manifest::path(dir.path());
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    m.as_object_mut().unwrap().remove("placement");
    std::fs::write(&manifest, m.to_string()).unwrap();

    // Start: the records are re-placed, then every key is served.
    let server = TestServer::start(Config::for_test(dir.path()));
    rt.block_on(async {
        let c = client();
        for k in &keys {
            let url = server.url(&format!("/kv/{}", k.replace('{', "%7B").replace('}', "%7D")));
            let res = c.get(url).send().await.unwrap();
            assert_eq!(res.status(), 200, "{k}");
            assert_eq!(res.text().await.unwrap(), format!("v-{k}"));
        }
    });
    server.stop();
    let all = read_all(dir.path(), shards);
    assert_eq!(all.len(), keys.len());
    assert_eq!(shale::ops::manifest::read(dir.path()).unwrap().unwrap().placement, shale::placement::PLACEMENT_VERSION);
}
