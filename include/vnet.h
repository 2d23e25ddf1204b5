/*
 * vnet.h — the classic vnet device, RUN/dev/NET (e.g. /run/vnet/dev/vmnet1, or
 * /dev/vmnet1 when vnetd runs with --dev-links).
 *
 *   fd = open("/run/vnet/dev/vmnet1", O_RDWR);   each open is a new port on the vnet
 *   ioctl(fd, VNETIOC_SETMAC, &mac);             optional: only our frames (+ broadcast)
 *   n = read(fd, packet, 1500);                  blocks for one whole Ethernet frame
 *   write(fd, packet, n);                         sends one whole frame
 *   close(fd);                                    the port goes away
 *
 * open: fails with ENFILE when vnetd is at a bound ([limits] device_opens, the open
 * devices of all vnets; ports_per_vnet; ports_per_uid; fd_reserve), with EACCES when
 * the vnet's allow lists refuse the caller, with ENXIO when the vnet is gone.
 * read: one call returns exactly one frame (no FCS). A frame longer than the buffer is
 * truncated to it and the rest is discarded. With O_NONBLOCK, read fails with EAGAIN
 * when no frame waits; poll/select report POLLIN when one does (POLLOUT always). A read
 * interrupted by a signal fails with EINTR. Once the vnet is deleted, read returns 0.
 * write: one call sends one frame; a frame the vnet cannot carry (shorter than 14
 * bytes, longer than its MTU + 14 (+4 tagged)) is accepted and counted as a drop.
 * ioctl: the commands below (fixed sizes, _IOW/_IOR); failures set errno, e.g. EINVAL
 * for a multicast MAC, ENOTTY for an unknown command.
 */
#ifndef VNET_H
#define VNET_H

#include <linux/ioctl.h>

/* The version VNETIOC_GETVERSION reports. */
#define VNET_API_VERSION 1

struct vnet_mac {
	unsigned char addr[6];
};

#define VNET_IOC_MAGIC 'V'
/* Declare the port's MAC: unicast frames for other MACs stop arriving (unless
 * promiscuous) and the switch knows the address at once. */
#define VNETIOC_SETMAC      _IOW(VNET_IOC_MAGIC, 1, struct vnet_mac)
/* Nonzero: receive every frame of the port's VLAN, whoever it is for. */
#define VNETIOC_SETPROMISC  _IOW(VNET_IOC_MAGIC, 2, int)
/* The port's id, as in `vnet port ls`. */
#define VNETIOC_GETPORTID   _IOR(VNET_IOC_MAGIC, 3, unsigned int)
/* VNET_API_VERSION of the daemon. */
#define VNETIOC_GETVERSION  _IOR(VNET_IOC_MAGIC, 4, unsigned int)

#endif /* VNET_H */
