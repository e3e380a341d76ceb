//! Real-socket tests of hail-discovery: multicast on the loopback interface only, links
//! on 127.0.0.1.

mod device;
