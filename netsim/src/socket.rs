//! A UDP socket on the simulated network: quinn's [`AsyncUdpSocket`], plus plain
//! `send_to`/`recv_from` for protocols that are not QUIC (discovery over multicast).

use std::future::poll_fn;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use crate::net::Net;

/// A socket bound on a simulated host; closed when dropped or when its host is killed.
pub struct SimSocket {
    net: Net,
    id: u64,
}

impl std::fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSocket")
            .field("id", &self.id)
            .field("addr", &self.net.socket_addr(self.id))
            .finish()
    }
}

impl SimSocket {
    pub(crate) fn new(net: Net, id: u64) -> Self {
        Self { net, id }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Sends one datagram (to a unicast address or a multicast group).
    pub fn send_to(&self, data: &[u8], dst: SocketAddr) {
        self.net.send(self.id, dst, data, None);
    }

    /// Waits for the next datagram and its sender; `None` once the socket is closed.
    pub async fn recv_from(&self) -> Option<(Vec<u8>, SocketAddr)> {
        poll_fn(|cx| {
            if self.net.socket_addr(self.id).is_none() {
                return Poll::Ready(None);
            }
            match self.net.recv(self.id, 1, cx.waker()) {
                Some(mut got) => Poll::Ready(got.pop().map(|(from, data)| (data, from))),
                None => Poll::Pending,
            }
        })
        .await
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        self.net.close_socket(self.id);
    }
}

/// The simulated network never pushes back on a sender: a full receiver drops instead.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for SimSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.net.send(
            self.id,
            transmit.destination,
            transmit.contents,
            transmit.segment_size,
        );
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let max = bufs.len().min(meta.len());
        let Some(got) = self.net.recv(self.id, max, cx.waker()) else {
            // Nothing queued, the host asleep, or the socket closed with its host: in every
            // case nothing will arrive until the network wakes this task.
            return Poll::Pending;
        };
        let mut n = 0;
        for ((from, data), (buf, m)) in got.into_iter().zip(bufs.iter_mut().zip(meta.iter_mut())) {
            // A datagram larger than the buffer is truncated, as a real socket would.
            let len = data.len().min(buf.len());
            buf[..len].copy_from_slice(&data[..len]);
            *m = RecvMeta {
                addr: from,
                len,
                stride: len,
                ecn: None,
                dst_ip: None,
            };
            n += 1;
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.net
            .socket_addr(self.id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "the socket is closed"))
    }

    fn may_fragment(&self) -> bool {
        false
    }
}
