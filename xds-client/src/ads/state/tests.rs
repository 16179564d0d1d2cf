use super::*;
use crate::any::pack;
use crate::pb::envoy::config::cluster::v3::Cluster;
use crate::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use crate::pb::envoy::config::listener::v3::Listener;

fn cluster(name: &str) -> Any {
    pack(&Cluster {
        name: name.into(),
        ..Default::default()
    })
}

fn sotw(body: Any) -> Incoming {
    Incoming {
        name: None,
        version: "v1".into(),
        body: Some(body),
    }
}

fn delta(name: &str, version: &str, body: Any) -> Incoming {
    Incoming {
        name: Some(name.into()),
        version: version.into(),
        body: Some(body),
    }
}

fn wildcard() -> TypeState {
    TypeState {
        wildcard: true,
        ..Default::default()
    }
}

fn names(update: &Update) -> Vec<&str> {
    update.resources.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn sotw_cluster_absence_is_removal_but_rejected_names_are_not_absent() {
    let mut state = wildcard();
    state.held.insert("a".into(), "v0".into());
    state.held.insert("b".into(), "v0".into());
    state.held.insert("c".into(), "v0".into());
    let wrong = pack(&Listener {
        name: "b".into(),
        ..Default::default()
    });
    let prepared = prepare(
        ResourceType::Cluster,
        &state,
        "v1",
        vec![sotw(cluster("a")), sotw(wrong)],
        Removal::StateOfTheWorld,
    );
    assert_eq!(names(&prepared.update), ["a"]);
    // "b" came with the wrong type and cannot be named; nothing is removed by absence then.
    assert_eq!(prepared.update.removed, Vec::<String>::new());
    assert_eq!(prepared.rejected.len(), 1);
    assert_eq!(prepared.rejected[0].name, "#1");
    assert!(prepared.rejected[0].reason.contains("Listener"));

    let prepared = prepare(
        ResourceType::Cluster,
        &state,
        "v1",
        vec![sotw(cluster("a"))],
        Removal::StateOfTheWorld,
    );
    assert_eq!(prepared.update.removed, ["b", "c"]);
}

#[test]
fn sotw_endpoints_are_never_removed_by_absence_and_unsubscribed_ones_are_ignored() {
    let mut state = TypeState::default();
    state.names.insert("c1".into());
    state.held.insert("c0".into(), "v0".into());
    let cla = |name: &str| {
        pack(&ClusterLoadAssignment {
            cluster_name: name.into(),
            ..Default::default()
        })
    };
    let prepared = prepare(
        ResourceType::Endpoint,
        &state,
        "v1",
        vec![sotw(cla("c1")), sotw(cla("other"))],
        Removal::StateOfTheWorld,
    );
    assert_eq!(names(&prepared.update), ["c1"]);
    assert!(prepared.update.removed.is_empty());
    assert!(prepared.rejected.is_empty());
}

#[test]
fn duplicates_undecodable_and_mismatched_names_are_rejected_by_name() {
    let state = wildcard();
    let garbage = Any {
        type_url: crate::resource::CLUSTER.into(),
        value: vec![0xff, 0xff, 0xff],
    };
    let prepared = prepare(
        ResourceType::Cluster,
        &state,
        "s1",
        vec![
            delta("dup", "1", cluster("dup")),
            delta("dup", "2", cluster("dup")),
            delta("junk", "1", garbage),
            delta("alias", "1", cluster("real")),
            delta("ok", "1", cluster("ok")),
            Incoming {
                name: Some("empty".into()),
                version: "1".into(),
                body: None,
            },
        ],
        Removal::Names(vec![]),
    );
    assert_eq!(names(&prepared.update), ["ok"]);
    let mut rejected: Vec<&str> = prepared.rejected.iter().map(|r| r.name.as_str()).collect();
    rejected.sort_unstable();
    assert_eq!(rejected, ["alias", "dup", "empty", "junk"]);
    let status = nack_status(ResourceType::Cluster, &prepared.rejected);
    assert_eq!(status.code, 3);
    assert!(
        status
            .message
            .starts_with("Cluster update rejected (4 resources): ")
    );
    assert!(
        status
            .message
            .contains("dup: appears 2 times in one response")
    );
    assert!(status.message.contains("junk: cannot decode Cluster"));
}

#[test]
fn delta_removals_only_name_held_resources() {
    let mut state = wildcard();
    state.held.insert("a".into(), "1".into());
    let prepared = prepare(
        ResourceType::Cluster,
        &state,
        "s2",
        vec![],
        Removal::Names(vec!["a".into(), "never-seen".into(), "a".into()]),
    );
    assert_eq!(prepared.update.removed, ["a"]);
}

#[test]
fn commit_holds_accepted_keeps_last_good_and_moves_version_only_on_full_accept() {
    let mut state = wildcard();
    state.held.insert("bad".into(), "1".into());
    state.accepted_version = "v0".into();
    let update = Update {
        resource_type: ResourceType::Cluster,
        version: "v1".into(),
        resources: vec![
            Resource {
                name: "good".into(),
                version: "2".into(),
                body: cluster("good"),
            },
            Resource {
                name: "bad".into(),
                version: "2".into(),
                body: cluster("bad"),
            },
            Resource {
                name: "new-bad".into(),
                version: "2".into(),
                body: cluster("new-bad"),
            },
        ],
        removed: vec![],
    };
    let rejected = vec![Rejection::new("bad", "no"), Rejection::new("new-bad", "no")];
    let detail = commit(&mut state, &update, "n1", &rejected).expect("a NACK");
    assert!(detail.message.contains("bad: no"));
    assert_eq!(state.nonce, "n1");
    assert_eq!(state.accepted_version, "v0");
    // The resume set: accepted ones at their versions, the last good "bad", never "new-bad".
    let held: Vec<(&str, &str)> = state
        .held
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(held, [("bad", "1"), ("good", "2")]);

    let update = Update {
        resources: vec![],
        removed: vec!["good".into()],
        version: "v2".into(),
        ..update
    };
    assert!(commit(&mut state, &update, "n2", &[]).is_none());
    assert_eq!(state.accepted_version, "v2");
    assert!(!state.held.contains_key("good"));
}

#[test]
fn subscription_changes_report_only_real_changes_and_forget_unsubscribed() {
    let mut state = TypeState::default();
    let diff = apply_change(
        &mut state,
        &Change::Subscribe(
            ResourceType::Route,
            vec!["r1".into(), "r1".into(), "".into()],
        ),
    );
    assert_eq!(diff.added, ["r1"]);
    state.held.insert("r1".into(), "1".into());
    let diff = apply_change(
        &mut state,
        &Change::Subscribe(ResourceType::Route, vec!["r1".into()]),
    );
    assert!(diff.is_empty());
    let diff = apply_change(
        &mut state,
        &Change::Unsubscribe(ResourceType::Route, vec!["r1".into(), "r9".into()]),
    );
    assert_eq!(diff.removed, ["r1"]);
    assert!(state.held.is_empty());
    assert!(!state.interested());

    let mut all = wildcard();
    let diff = apply_change(
        &mut all,
        &Change::Subscribe(ResourceType::Listener, vec!["l1".into()]),
    );
    assert!(diff.is_empty(), "a wildcard subscription covers every name");
}
