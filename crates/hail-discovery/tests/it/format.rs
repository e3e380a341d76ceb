//! Typed messages, questions and answers in the device's message format.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use hail_discovery::{AskError, Device, DeviceEvent, DeviceEvents, MessageFormat};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Command {
    light: String,
    level: u8,
}

async fn device(name: &str, group: SocketAddr, format: MessageFormat) -> (Device, DeviceEvents) {
    Device::builder(name)
        .group(group)
        .interface(Ipv4Addr::LOCALHOST)
        .listen("127.0.0.1:0".parse().unwrap())
        .format(format)
        .start()
        .await
        .expect("device starts")
}

async fn meet(a: &Device, ea: &mut DeviceEvents, b: &Device) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while a.peers().is_empty() {
            ea.next().await.expect("running");
        }
        b.wait_for_peer(a.name()).await;
    })
    .await
    .expect("they meet");
}

async fn next_message(events: &mut DeviceEvents) -> bytes::Bytes {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(DeviceEvent::Message { payload, .. }) = events.next().await {
                return payload;
            }
        }
    })
    .await
    .expect("a message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_messages_and_questions_in_each_format() {
    let mut group = SocketAddr::from((Ipv4Addr::new(239, 255, 72, 83), 0));
    for format in [MessageFormat::Postcard, MessageFormat::Json] {
        let (lamp, mut el) = device("lamp", group, format).await;
        group = lamp.group();
        let (switch, mut es) = device("switch", group, format).await;
        meet(&switch, &mut es, &lamp).await;
        let cmd = Command {
            light: "hall".into(),
            level: 7,
        };
        let r = switch.send_msg("lamp", &cmd).await.unwrap();
        assert_eq!(r["lamp"], Ok(()));
        let payload = next_message(&mut el).await;
        assert_eq!(lamp.decode::<Command>(&payload).unwrap(), cmd, "{format:?}");
        if format == MessageFormat::Json {
            assert_eq!(payload, r#"{"light":"hall","level":7}"#);
        }
        // The question handler works on bytes; it decodes and encodes with the format.
        lamp.on_question(move |_from, q| async move {
            let c: Command = format.decode(&q).map_err(|e| e.to_string())?;
            format.encode(&(c.level * 2)).map_err(|e| e.to_string())
        })
        .unwrap();
        let answers = switch
            .ask_msg::<_, u8>("lamp", &cmd, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(answers["lamp"], Ok(14), "{format:?}");
        // An answer of another type is undecodable, not a panic or a timeout.
        let answers = switch
            .ask_msg::<_, Command>("lamp", &cmd, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(
            matches!(answers["lamp"], Err(AskError::Undecodable(_))),
            "{answers:?}"
        );
        switch.close().await;
        lamp.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_format_sends_plain_utf8_and_refuses_other_values() {
    let g = SocketAddr::from((Ipv4Addr::new(239, 255, 72, 84), 0));
    let (lamp, mut el) = device("lamp", g, MessageFormat::Text).await;
    let (switch, mut es) = device("switch", lamp.group(), MessageFormat::Text).await;
    meet(&switch, &mut es, &lamp).await;
    switch.send_msg("lamp", "lights on").await.unwrap();
    let payload = next_message(&mut el).await;
    assert_eq!(payload, "lights on");
    assert_eq!(lamp.decode::<String>(&payload).unwrap(), "lights on");
    assert!(switch.send_msg("lamp", &42).await.is_err());
    // The bytes API is unchanged.
    let sent = switch
        .send("lamp", bytes::Bytes::from_static(b"\xff raw"))
        .await;
    assert_eq!(sent, [("lamp".to_string(), Ok(()))].into());
    let payload = next_message(&mut el).await;
    assert_eq!(payload.as_ref(), b"\xff raw");
    assert!(lamp.decode::<String>(&payload).is_err());
    switch.close().await;
    lamp.close().await;
}
