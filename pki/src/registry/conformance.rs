//! The suite every [`Registry`] implementation must pass, run by each implementation's tests
//! with a function that opens the store (called again to check that changes survive reopening;
//! each store is dropped before the next is opened). It panics on the first failure.

use time::{Duration, OffsetDateTime};

use super::{CertRecord, Registry, RegistryError, State, Status, StatusCounts};
use crate::{RevocationReason, RevokedEntry, Serial};

fn record(n: u8, account: &str, not_after: OffsetDateTime) -> CertRecord {
    CertRecord {
        serial: Serial::from_random([n; 16]).unwrap_or_else(|| unreachable!("a nonzero first byte")),
        account: account.into(),
        profile: crate::Profile::Client,
        key_sha256: [n; 32],
        not_before: not_after - Duration::days(30),
        not_after,
        recorded_at: not_after - Duration::days(30),
        state: State::Pending,
        issuer: 1,
    }
}

/// The whole suite, with `now` as the clock (the caller's; pki reads none): the issuance life
/// cycle, the indices, revocation and the CRL's entries, the CRL number, recording certificates
/// signed elsewhere with superseding, reopening, concurrent reissues of one account, and the
/// blocked keys.
pub fn registry(open: &dyn Fn() -> Box<dyn Registry>, now: OffsetDateTime) {
    {
        let store = open();
        let now = now.replace_nanosecond(0).expect("ns");
        let a = record(1, "alice", now + Duration::days(10));
        let b = record(2, "bob", now + Duration::days(40));
        store.record_pending(&a, Some(&[7; 16])).expect("a");
        store.record_pending(&b, None).expect("b");
        assert!(matches!(store.record_pending(&a, None), Err(RegistryError::SerialTaken(_))));
        assert_eq!(store.find_request(&[7; 16]).expect("find").map(|(r, der)| (r.serial, der)), Some((a.serial, None)));
        assert_eq!(store.find_request(&[8; 16]).expect("find"), None);
        assert_eq!(store.get(&a.serial).expect("get").map(|r| r.status(now)), Some(Status::Pending));

        store.record_issued(&a.serial, b"der-a").expect("issued");
        assert!(store.record_issued(&a.serial, b"again").is_err(), "issued twice");
        assert_eq!(store.certificate_der(&a.serial).expect("der"), Some(b"der-a".to_vec()));
        assert_eq!(store.by_account("alice").expect("acct").len(), 1);
        assert_eq!(store.valid_by_account("alice").expect("valid").len(), 1, "issued: in the valid index");
        assert!(store.valid_by_account("bob").expect("valid").is_empty(), "pending: not yet");
        assert_eq!(store.by_account("alic").expect("prefix is not a match").len(), 0);
        assert_eq!(store.by_key(&[2; 32]).expect("key")[0].serial, b.serial);

        let soon = store.expiring_between(now, now + Duration::days(30)).expect("range");
        assert_eq!(soon.iter().map(|r| r.serial).collect::<Vec<_>>(), [a.serial]);

        assert!(store.revoke(&b.serial, now, RevocationReason::KeyCompromise).is_err(), "pending");
        let revoked = store.revoke(&a.serial, now, RevocationReason::KeyCompromise).expect("revoke");
        assert!(store.valid_by_account("alice").expect("valid").is_empty(), "revoked: out of the valid index");
        assert_eq!(revoked.status(now), Status::Revoked);
        assert!(matches!(
            store.revoke(&a.serial, now, RevocationReason::KeyCompromise),
            Err(RegistryError::WrongState { status: "revoked", .. })
        ));
        let crl = store.revoked_unexpired(now).expect("crl");
        assert_eq!(crl, [RevokedEntry { serial: a.serial, revoked_at: now, reason: RevocationReason::KeyCompromise }]);
        assert!(store.revoked_unexpired(now + Duration::days(11)).expect("later").is_empty());

        assert_eq!(store.next_crl_number().expect("1"), 1);
        assert_eq!(store.next_crl_number().expect("2"), 2);
        drop(store);
        let reopened = open();
        assert_eq!(reopened.next_crl_number().expect("3"), 3, "CRL number survives reopening");
        assert_eq!(reopened.all().expect("all").len(), 2);

        // A certificate recorded from a signer supersedes the account's valid ones in one write.
        let mut c = record(3, "carol", now + Duration::days(20));
        c.state = State::Issued;
        assert!(reopened.record_certificate(&c, b"der-c", true).expect("c").is_empty());
        let mut d = record(4, "carol", now + Duration::days(60));
        d.state = State::Issued;
        d.recorded_at = now;
        assert_eq!(reopened.record_certificate(&d, b"der-d", true).expect("d"), [c.serial]);
        assert_eq!(reopened.get(&c.serial).expect("get").map(|r| r.status(now)), Some(Status::Superseded));
        assert_eq!(
            reopened.valid_by_account("carol").expect("valid").iter().map(|r| r.serial).collect::<Vec<_>>(),
            [d.serial]
        );
        assert!(
            reopened.record_certificate(&d, b"der-d", true).expect("again").is_empty(),
            "recording twice is a no-op"
        );
        assert!(reopened.record_certificate(&d, b"other", true).is_err(), "another certificate under the serial");
        counts_agree(reopened.as_ref(), now);
        concurrent_reissues(reopened.as_ref(), now);
        let key = [0x77; 32];
        assert_eq!(reopened.blocked_key(&key).expect("blocked"), None);
        assert!(reopened.block_key(&key, &a.serial, now).expect("block"), "a first report blocks");
        assert!(!reopened.block_key(&key, &c.serial, now + Duration::days(1)).expect("again"), "once is enough");
        let mut blocked = record(0x55, "erin", now + Duration::days(30));
        blocked.key_sha256 = key;
        blocked.state = State::Issued;
        assert!(
            matches!(reopened.record_certificate(&blocked, b"der-e", false), Err(RegistryError::KeyBlocked)),
            "a certificate for a blocked key is not recorded"
        );
        assert_eq!(reopened.get(&blocked.serial).expect("get"), None);
    }
    let reopened = open();
    let blocked = reopened.blocked_key(&[0x77; 32]).expect("blocked").expect("kept across reopening");
    assert_eq!((blocked.key_sha256, blocked.at), ([0x77; 32], now.replace_nanosecond(0).unwrap_or(now)));
    assert_eq!(reopened.blocked_key(&[0x78; 32]).expect("blocked"), None);
    key_holders(reopened.as_ref(), now);
    expiring_pages(reopened.as_ref(), now);
    counts_agree(reopened.as_ref(), now);
}

/// The counts by status, and of valid certificates expiring by a time, are what the records
/// say, at moments around every notAfter (a second before, at it, a millisecond and a
/// second after: inside the hour it falls in), long before and long after.
fn counts_agree(store: &dyn Registry, now: OffsetDateTime) {
    let all = store.all().expect("all");
    let mut moments = vec![now, now - Duration::days(400), now + Duration::days(4000)];
    for r in &all {
        let t = r.not_after;
        moments.extend([t - Duration::seconds(1), t, t + Duration::milliseconds(1), t + Duration::seconds(1)]);
    }
    for at in moments {
        let mut expected = StatusCounts::default();
        for r in &all {
            expected.add(r.status(at));
        }
        assert_eq!(store.count_by_status(at).expect("count"), expected, "counts by status at {at}");
        assert_eq!(expected.total(), all.len() as u64);
        for until in [at - Duration::seconds(1), at, at + Duration::minutes(30), at + Duration::days(45)] {
            let valid_by = |r: &&CertRecord| r.status(at) == Status::Valid && r.not_after <= until;
            let want = all.iter().filter(valid_by).count() as u64;
            let got = store.count_valid_expiring(at, until).expect("count expiring");
            assert_eq!(got, want, "valid at {at} and expiring by {until}");
        }
    }
}

/// Pages of the expiry index: the first ones in notAfter order among those kept, and no more.
fn expiring_pages(store: &dyn Registry, now: OffsetDateTime) {
    let day = |n: i64| now + Duration::days(500 + n);
    // Recorded out of order; "skip" is filtered out by the caller's predicate.
    for (n, account, days) in [(0x60, "e3", 3), (0x61, "e1", 1), (0x62, "skip", 0), (0x63, "e2", 2), (0x64, "e4", 4)] {
        store.record_pending(&record(n, account, day(days)), None).expect("recorded");
    }
    let first = |limit: usize| -> Vec<String> {
        let page = store.expiring_first(day(0), day(10), limit, &|r| r.account != "skip").expect("page");
        page.into_iter().map(|r| r.account).collect()
    };
    assert_eq!(first(2), ["e1", "e2"]);
    assert_eq!(first(10), ["e1", "e2", "e3", "e4"]);
    assert!(first(0).is_empty());
    let all = store.expiring_first(day(0), day(3), 10, &|_| true).expect("page");
    assert_eq!(all.iter().map(|r| r.account.as_str()).collect::<Vec<_>>(), ["skip", "e1", "e2", "e3"]);
}

/// One key certified for accounts whose names share a beginning: the holders other than one
/// account are the others, and only they.
fn key_holders(store: &dyn Registry, now: OffsetDateTime) {
    for (n, account) in [(0x30, "caro"), (0x31, "carol"), (0x32, "carol"), (0x33, "carol2"), (0x34, "carl")] {
        let record = CertRecord { key_sha256: [9; 32], ..record(n, account, now + Duration::days(30)) };
        store.record_pending(&record, None).expect("recorded");
    }
    let others = |account: &str| -> Vec<String> {
        let holders = store.by_key_for_others(&[9; 32], account).expect("others");
        let mut names: Vec<String> = holders.into_iter().map(|r| r.account).collect();
        names.sort();
        names
    };
    assert_eq!(others("carol"), ["carl", "caro", "carol2"]);
    assert_eq!(others("caro"), ["carl", "carol", "carol", "carol2"]);
    assert_eq!(others("dave").len(), 5);
    assert_eq!(store.by_key(&[9; 32]).expect("key").len(), 5);
}

/// Eight writers record a certificate for one account at once, each superseding the others:
/// exactly one stays valid, and every other is superseded.
fn concurrent_reissues(store: &dyn Registry, now: OffsetDateTime) {
    std::thread::scope(|s| {
        for n in 0..8u8 {
            s.spawn(move || {
                let mut r = record(0x40 + n, "dora", now + Duration::days(100));
                r.state = State::Issued;
                r.recorded_at = now;
                store.record_certificate(&r, &[n], true).expect("recorded");
            });
        }
    });
    let all = store.by_account("dora").expect("by account");
    assert_eq!(all.len(), 8);
    let valid = store.valid_by_account("dora").expect("valid");
    assert_eq!(valid.len(), 1, "exactly one of eight concurrent reissues stays valid: {valid:?}");
    let superseded = all.iter().filter(|r| r.status(now) == Status::Superseded).count();
    assert_eq!(superseded, 7, "the other seven are superseded");
}
