// Command relay is a zero-work TCP relay, the floor bench/invoke.sh sets
// beside mecha: what one hop costs on this machine when nothing is parsed.
//
//	relay -m copy  -l ADDR -u UPSTREAM   a goroutine per direction (Go netpoller)
//	relay -m epoll -l ADDR -u UPSTREAM   one locked thread on raw epoll
//	relay -m muxin -l ADDR -u MUXOUT     every connection multiplexed over one
//	relay -m muxout -l ADDR -u UPSTREAM  link, frames written in batches
//
// muxin and muxout form a pair: the transport a multiplexed runtime-to-
// runtime link would be, with nothing else.
package main

import (
	"flag"
	"io"
	"net"
	"runtime"
	"syscall"
)

func main() {
	listen := flag.String("l", "", "")
	up := flag.String("u", "", "")
	mode := flag.String("m", "copy", "copy|sync|epoll")
	flag.Parse()
	switch *mode {
	case "epoll":
		epollRelay(*listen, *up)
		return
	case "muxin":
		muxIn(*listen, *up)
		return
	case "muxout":
		muxOut(*listen, *up)
		return
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		panic(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			panic(err)
		}
		go func() {
			u, err := net.Dial("tcp", *up)
			if err != nil {
				c.Close()
				return
			}
			go io.Copy(u, c)
			io.Copy(c, u)
		}()
	}
}

// epollRelay: one locked OS thread, raw epoll, level-triggered.
func epollRelay(listen, up string) {
	runtime.LockOSThread()
	ln, _ := net.Listen("tcp", listen)
	lf, _ := ln.(*net.TCPListener).File()
	lfd := int(lf.Fd())
	syscall.SetNonblock(lfd, true)
	ep, _ := syscall.EpollCreate1(0)
	syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, lfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(lfd)})
	peer := map[int]int{}
	ua, _ := net.ResolveTCPAddr("tcp", up)
	var sa syscall.SockaddrInet4
	copy(sa.Addr[:], ua.IP.To4())
	sa.Port = ua.Port
	evs := make([]syscall.EpollEvent, 64)
	buf := make([]byte, 64<<10)
	for {
		n, err := syscall.EpollWait(ep, evs, -1)
		if err != nil {
			continue
		}
		for i := 0; i < n; i++ {
			fd := int(evs[i].Fd)
			if fd == lfd {
				c, _, err := syscall.Accept(lfd)
				if err != nil {
					continue
				}
				u, _ := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
				if err := syscall.Connect(u, &sa); err != nil {
					panic(err)
				}
				syscall.SetsockoptInt(c, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
				syscall.SetsockoptInt(u, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
				peer[c] = u
				peer[u] = c
				syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, c, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(c)})
				syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, u, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(u)})
				continue
			}
			m, err := syscall.Read(fd, buf)
			if m <= 0 || err != nil {
				o := peer[fd]
				syscall.Close(fd)
				syscall.Close(o)
				delete(peer, fd)
				delete(peer, o)
				continue
			}
			syscall.Write(peer[fd], buf[:m])
		}
	}
}
