/*
 * sglat: per-command latency of one SCSI command issued N times with SG_IO.
 *
 *   sglat DEV N tur|read    (read = READ(10) of 1 block of 2048 bytes at LBA 0..)
 *
 * Prints one JSON object: n, errors, and latency statistics in microseconds.
 * Built on the host in the guest image's own userspace (chroot gcc), so one
 * small static binary measures every stack the same way; trixie's sg_turs
 * never sends a command (sg3-utils 1.48 bug), and a shell loop of sg_raw
 * would mostly time fork+exec.
 */
#include <fcntl.h>
#include <scsi/sg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: sglat DEV N tur|read\n");
		return 2;
	}
	int n = atoi(argv[2]);
	int is_read = strcmp(argv[3], "read") == 0;
	int fd = open(argv[1], O_RDONLY | O_NONBLOCK);
	if (fd < 0 || n <= 0) {
		perror(argv[1]);
		return 2;
	}
	double *lat = calloc(n, sizeof(double));
	unsigned char buf[2048], sense[64];
	int errors = 0;
	for (int i = 0; i < n; i++) {
		unsigned char cdb[10] = {0};
		sg_io_hdr_t io;
		memset(&io, 0, sizeof(io));
		io.interface_id = 'S';
		io.cmdp = cdb;
		io.sbp = sense;
		io.mx_sb_len = sizeof(sense);
		io.timeout = 20000;
		if (is_read) {
			unsigned lba = (unsigned)(i * 7919) % 1024;
			cdb[0] = 0x28;
			cdb[2] = lba >> 24; cdb[3] = lba >> 16; cdb[4] = lba >> 8; cdb[5] = lba;
			cdb[8] = 1;
			io.cmd_len = 10;
			io.dxfer_direction = SG_DXFER_FROM_DEV;
			io.dxferp = buf;
			io.dxfer_len = sizeof(buf);
		} else {
			io.cmd_len = 6;
			io.dxfer_direction = SG_DXFER_NONE;
		}
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		int rc = ioctl(fd, SG_IO, &io);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (rc < 0 || io.status || io.host_status || io.driver_status)
			errors++;
		lat[i] = (t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_nsec - t0.tv_nsec) / 1e3;
	}
	double sum = 0;
	for (int i = 0; i < n; i++)
		sum += lat[i];
	qsort(lat, n, sizeof(double), cmp);
	printf("{\"n\": %d, \"errors\": %d, \"mean_us\": %.1f, \"min_us\": %.1f, "
	       "\"p50_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f}\n",
	       n, errors, sum / n, lat[0], lat[n / 2], lat[(int)(n * 0.99)], lat[n - 1]);
	return 0;
}
