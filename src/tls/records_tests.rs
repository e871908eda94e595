use super::*;

/// wharf's side (opens the client's records) and a client's side (opens
/// wharf's): the same suite with the secrets swapped.
fn pair(suite: Suite) -> (Records, Records) {
    let len = suite.secret_len();
    let client = [0x11u8; 48];
    let server = [0x22u8; 48];
    let make = |rx: &[u8], tx: &[u8]| Records {
        suite,
        rx: Direction::new(suite, &rx[..len], 0).unwrap(),
        tx: Direction::new(suite, &tx[..len], 0).unwrap(),
        empty_in_a_row: 0,
        key_updates_in_a_row: 0,
        warnings_in_a_row: 0,
        owes_key_update: false,
    };
    (make(&client, &server), make(&server, &client))
}

fn seal(from: &mut Records, plaintext: &[u8]) -> Vec<u8> {
    let mut room = vec![0; Records::room_for(plaintext.len())];
    let n = from.seal_data(plaintext, &mut room).unwrap();
    room.truncate(n);
    room
}

/// Opens every record in `bytes`; the data they carried, and what else came.
fn open_all(to: &mut Records, mut bytes: Vec<u8>) -> Result<(Vec<u8>, Vec<Opened>), RecordError> {
    let mut key = to.opener()?;
    let mut data = Vec::new();
    let mut others = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = Records::record_len(&bytes[at..])?.expect("a whole header");
        let record = &mut bytes[at..at + len];
        match to.open(&mut key, record)? {
            Opened::Data(range) => data.extend_from_slice(&record[range]),
            other => others.push(other),
        }
        at += len;
    }
    Ok((data, others))
}

#[test]
fn keys_are_derived_as_in_rfc_8448() {
    // RFC 8448 §3, the server's application traffic secret and its keys.
    let secret = [
        0xa1, 0x1a, 0xf9, 0xf0, 0x55, 0x31, 0xf8, 0x56, 0xad, 0x47, 0x11, 0x6b, 0x45, 0xa9, 0x50,
        0x32, 0x82, 0x04, 0xb4, 0xf4, 0x4b, 0xfb, 0x6b, 0x3a, 0x4b, 0x4f, 0x1f, 0x3f, 0xcb, 0x63,
        0x16, 0x43,
    ];
    let direction = Direction::new(Suite::Aes128Gcm, &secret, 0).unwrap();
    assert_eq!(
        direction.key[..16],
        [
            0x9f, 0x02, 0x28, 0x3b, 0x6c, 0x9c, 0x07, 0xef, 0xc2, 0x6b, 0xb9, 0xf2, 0xac, 0x92,
            0xe3, 0x56
        ]
    );
    assert_eq!(
        direction.iv,
        [
            0xcf, 0x78, 0x2b, 0x88, 0xdd, 0x83, 0x54, 0x9a, 0xad, 0xf1, 0xe9, 0x84
        ]
    );
}

#[test]
fn data_goes_both_ways_in_every_suite() {
    for suite in [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::Chacha20Poly1305] {
        let (mut wharf, mut client) = pair(suite);
        let big = vec![7u8; MAX_FRAGMENT];
        let mut bytes = seal(&mut client, b"hello");
        bytes.extend(seal(&mut client, &big));
        let (data, others) = open_all(&mut wharf, bytes).unwrap();
        assert_eq!(data.len(), 5 + MAX_FRAGMENT, "{suite:?}");
        assert!(others.is_empty());
        let (data, _) = open_all(&mut client, seal(&mut wharf, b"back")).unwrap();
        assert_eq!(data, b"back", "{suite:?}");
    }
}

#[test]
fn padding_is_removed_and_an_all_padding_record_refused() {
    let (mut wharf, mut client) = pair(Suite::Aes128Gcm);
    let record = client.seal_inner(b"abc\x17\0\0\0\0");
    let (data, _) = open_all(&mut wharf, record).unwrap();
    assert_eq!(data, b"abc");
    let record = client.seal_inner(&[0; 8]);
    let e = open_all(&mut wharf, record).unwrap_err();
    assert_eq!(e.alert, Some(Alert::UnexpectedMessage));
}

#[test]
fn a_changed_byte_fails_authentication() {
    let (mut wharf, mut client) = pair(Suite::Aes128Gcm);
    let mut record = seal(&mut client, b"hello");
    record[8] ^= 1;
    let e = open_all(&mut wharf, record).unwrap_err();
    assert_eq!(e.alert, Some(Alert::BadRecordMac));
    // A record replayed (its sequence number used up) fails too.
    let (mut wharf, mut client) = pair(Suite::Aes128Gcm);
    let record = seal(&mut client, b"hello");
    let mut twice = record.clone();
    twice.extend(record);
    let e = open_all(&mut wharf, twice).unwrap_err();
    assert_eq!(e.alert, Some(Alert::BadRecordMac));
}

#[test]
fn a_key_update_that_asks_for_ours_is_answered() {
    for suite in [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::Chacha20Poly1305] {
        let (mut wharf, mut client) = pair(suite);
        let mut bytes = seal(&mut client, b"before");
        bytes.extend(client.seal_inner(&[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 1, TYPE_HANDSHAKE]));
        client.tx.update(suite).unwrap();
        bytes.extend(seal(&mut client, b"after"));
        let (data, others) = open_all(&mut wharf, bytes).unwrap();
        assert_eq!(data, b"beforeafter");
        assert_eq!(others, [Opened::KeyUpdateAsked]);
        let mut answer = vec![0; KEY_UPDATE_RECORD];
        let n = wharf.seal_key_update(&mut answer).unwrap();
        answer.truncate(n);
        answer.extend(seal(&mut wharf, b"new key"));
        let (data, others) = open_all(&mut client, answer).unwrap();
        assert_eq!(data, b"new key", "{suite:?}");
        assert_eq!(others, [Opened::Nothing]);
    }
}

#[test]
fn the_sending_key_is_updated_at_its_limit() {
    let (mut wharf, mut client) = pair(Suite::Aes128Gcm);
    wharf.tx.seq = Suite::Aes128Gcm.confidentiality_limit();
    client.rx.seq = wharf.tx.seq;
    let bytes = seal(&mut wharf, b"x");
    assert_eq!(bytes.len(), KEY_UPDATE_RECORD + OVERHEAD + 1);
    let (data, others) = open_all(&mut client, bytes).unwrap();
    assert_eq!(data, b"x");
    assert_eq!(others, [Opened::Nothing]);
    assert_eq!(wharf.tx.seq, 1);
}

#[test]
fn alerts_end_or_are_ignored() {
    let (mut wharf, mut client) = pair(Suite::Aes128Gcm);
    let record = client.seal_inner(&[1, 90, TYPE_ALERT]);
    assert_eq!(open_all(&mut wharf, record).unwrap().1, [Opened::Nothing]);
    let mut room = [0; 64];
    let n = client.seal_alert(Alert::CloseNotify, &mut room).unwrap();
    assert_eq!(
        open_all(&mut wharf, room[..n].to_vec()).unwrap().1,
        [Opened::Closed]
    );
    // A few warnings (user_canceled) pass, one above, not endless ones.
    for _ in 1..MAX_WARNINGS_IN_A_ROW {
        let record = client.seal_inner(&[1, 90, TYPE_ALERT]);
        assert_eq!(open_all(&mut wharf, record).unwrap().1, [Opened::Nothing]);
    }
    let record = client.seal_inner(&[1, 90, TYPE_ALERT]);
    let e = open_all(&mut wharf, record).unwrap_err();
    assert_eq!(e.alert, Some(Alert::UnexpectedMessage));
    let (mut wharf, mut client) = pair(Suite::Aes128Gcm);
    let record = client.seal_inner(&[3, 40, TYPE_ALERT]);
    let e = open_all(&mut wharf, record).unwrap_err();
    assert_eq!(e.alert, Some(Alert::IllegalParameter), "an unknown level");
    // A fatal alert of the client's gets none back.
    let record = client.seal_inner(&[2, 40, TYPE_ALERT]);
    assert_eq!(open_all(&mut wharf, record).unwrap_err().alert, None);
    let (mut wharf, mut client) = pair(Suite::Aes128Gcm);
    let record = client.seal_inner(&[1, 0, 0, TYPE_ALERT]);
    let e = open_all(&mut wharf, record).unwrap_err();
    assert_eq!(e.alert, Some(Alert::DecodeError));
}

#[test]
fn handshake_messages_other_than_a_whole_key_update_are_refused() {
    for inner in [
        // NewSessionTicket from a client.
        &[4, 0, 0, 1, 0, TYPE_HANDSHAKE][..],
        // A KeyUpdate with more after it in its record.
        &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 0, 23, TYPE_HANDSHAKE][..],
        // Half a KeyUpdate.
        &[HANDSHAKE_KEY_UPDATE, 0, TYPE_HANDSHAKE][..],
    ] {
        let (mut wharf, mut client) = pair(Suite::Aes128Gcm);
        let e = open_all(&mut wharf, client.seal_inner(inner)).unwrap_err();
        assert_eq!(e.alert, Some(Alert::UnexpectedMessage), "{inner:?}");
    }
    let (mut wharf, mut client) = pair(Suite::Aes128Gcm);
    let record = client.seal_inner(&[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 2, TYPE_HANDSHAKE]);
    let e = open_all(&mut wharf, record).unwrap_err();
    assert_eq!(e.alert, Some(Alert::IllegalParameter));
}

#[test]
fn headers_no_client_may_send_are_refused() {
    let e = Records::record_len(&[22, 3, 3, 0, 5]).unwrap_err();
    assert_eq!(e.alert, Some(Alert::UnexpectedMessage));
    let e = Records::record_len(&[20, 3, 3, 0, 1]).unwrap_err();
    assert_eq!(e.alert, Some(Alert::UnexpectedMessage));
    let too_long = (MAX_CIPHERTEXT + 1) as u16;
    let [hi, lo] = too_long.to_be_bytes();
    let e = Records::record_len(&[23, 3, 3, hi, lo]).unwrap_err();
    assert_eq!(e.alert, Some(Alert::RecordOverflow));
    assert_eq!(Records::record_len(&[23, 3, 3, 0]).unwrap(), None);
    assert_eq!(Records::record_len(&[23, 3, 3, 1, 0]).unwrap(), Some(261));
}

#[test]
fn endless_empty_records_are_refused() {
    let (mut wharf, mut client) = pair(Suite::Aes128Gcm);
    let mut bytes = Vec::new();
    for _ in 0..MAX_EMPTY_IN_A_ROW {
        bytes.extend(client.seal_inner(&[TYPE_APPLICATION_DATA]));
    }
    // Data in between starts the count again.
    bytes.extend(seal(&mut client, b"x"));
    for _ in 0..MAX_EMPTY_IN_A_ROW {
        bytes.extend(client.seal_inner(&[TYPE_APPLICATION_DATA]));
    }
    let (data, _) = open_all(&mut wharf, bytes).unwrap();
    assert_eq!(data, b"x");
    let e = open_all(&mut wharf, client.seal_inner(&[TYPE_APPLICATION_DATA])).unwrap_err();
    assert_eq!(e.alert, Some(Alert::UnexpectedMessage));
}

#[test]
fn plaintext_over_a_record_is_refused() {
    let (mut wharf, mut client) = pair(Suite::Aes128Gcm);
    let mut inner = vec![1u8; MAX_FRAGMENT + 1];
    inner.push(TYPE_APPLICATION_DATA);
    let e = open_all(&mut wharf, client.seal_inner(&inner)).unwrap_err();
    assert_eq!(e.alert, Some(Alert::RecordOverflow));
}

/// RFC 8446 §5.4: "the full encoded TLSInnerPlaintext MUST NOT exceed
/// 2^14 + 1 octets", padding included.
#[test]
fn padding_beyond_the_inner_plaintext_limit_is_refused() {
    let (mut wharf, mut client) = pair(Suite::Aes128Gcm);
    let record = client.seal_raw(TYPE_APPLICATION_DATA, &vec![1u8; MAX_FRAGMENT], 200);
    assert!(
        record.len() - HEADER_LEN <= MAX_CIPHERTEXT,
        "the header check passes"
    );
    let result = open_all(&mut wharf, record);
    assert_eq!(
        result.as_ref().err().and_then(|e| e.alert),
        Some(Alert::RecordOverflow),
        "a 16,601-byte TLSInnerPlaintext was {:?}",
        result.map(|(data, _)| data.len())
    );
}

#[test]
fn many_key_update_requests_get_one_answer_and_a_flood_is_refused() {
    let (mut wharf, mut client) = pair(Suite::Aes128Gcm);
    let mut bytes = Vec::new();
    for _ in 0..3 {
        bytes.extend(client.seal_raw(TYPE_HANDSHAKE, &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 1], 0));
        client.update_tx_for_test();
    }
    let (_, others) = open_all(&mut wharf, bytes).unwrap();
    assert_eq!(others.len(), 3);
    assert!(wharf.owes_key_update());
    // The answer goes before the next data, once.
    let answer_and_data = seal(&mut wharf, b"x");
    assert_eq!(answer_and_data.len(), KEY_UPDATE_RECORD + OVERHEAD + 1);
    assert!(!wharf.owes_key_update());
    assert_eq!(seal(&mut wharf, b"y").len(), OVERHEAD + 1);
    let (data, _) = open_all(&mut client, answer_and_data).unwrap();
    assert_eq!(data, b"x");

    let (mut wharf, mut client) = pair(Suite::Aes128Gcm);
    let mut bytes = Vec::new();
    for _ in 0..=MAX_KEY_UPDATES_IN_A_ROW {
        bytes.extend(client.seal_raw(TYPE_HANDSHAKE, &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 0], 0));
        client.update_tx_for_test();
    }
    let e = open_all(&mut wharf, bytes).unwrap_err();
    assert_eq!(e.alert, Some(Alert::UnexpectedMessage));
}
