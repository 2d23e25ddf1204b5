/*
 * The classic vnet device API, verbatim: open, ioctl, read, write, close.
 *
 *   cc -I include -o vmnet-classic examples/vmnet-classic.c
 *   ./vmnet-classic /run/vnet/dev/vmnet1        (or /dev/vmnet1 with vnetd --dev-links)
 *
 * Opens a port on the vnet, asks for its id, reads one frame and prints it, then writes
 * one frame: a broadcast with source 02:00:00:00:00:01 and EtherType 0x88b5 (local
 * experimental), whose payload says "vmnet-classic".
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vnet.h"

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "/dev/vmnet1";
	unsigned char packet[1500];
	unsigned int id = 0;
	int fd, n, i;

	fd = open(path, O_RDWR);
	if (fd < 0) {
		perror(path);
		return 1;
	}
	if (ioctl(fd, VNETIOC_GETPORTID, &id) < 0) {
		perror("ioctl VNETIOC_GETPORTID");
		return 1;
	}
	printf("port %u\n", id);
	fflush(stdout);

	n = read(fd, packet, 1500);
	if (n < 0) {
		perror("read");
		return 1;
	}
	printf("received %d bytes: dst %02x:%02x:%02x:%02x:%02x:%02x src %02x:%02x:%02x:%02x:%02x:%02x type %02x%02x\n",
	       n, packet[0], packet[1], packet[2], packet[3], packet[4], packet[5],
	       packet[6], packet[7], packet[8], packet[9], packet[10], packet[11],
	       packet[12], packet[13]);
	for (i = 0; i < n; i++)
		printf("%02x%s", packet[i], (i % 16 == 15 || i == n - 1) ? "\n" : " ");
	fflush(stdout);

	memset(packet, 0, sizeof(packet));
	memset(packet, 0xff, 6);
	memcpy(packet + 6, "\x02\x00\x00\x00\x00\x01", 6);
	packet[12] = 0x88;
	packet[13] = 0xb5;
	memcpy(packet + 14, "vmnet-classic", 13);
	n = write(fd, packet, 1500);
	if (n < 0) {
		perror("write");
		return 1;
	}
	printf("sent %d bytes\n", n);

	close(fd);
	return 0;
}
