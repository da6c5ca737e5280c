// SPDX-License-Identifier: GPL-2.0
/*
 * A 32-bit (i386) responder for /dev/vhba_ctl: the module's compat paths
 * as a 32-bit cdemu-daemon would use them.
 *
 * Built in the guest with the image's own gcc, freestanding (no 32-bit libc
 * is needed, only gcc's -m32 code generation and ld's elf_i386):
 *
 *	gcc -m32 -static -nostdlib -ffreestanding -fno-pic -no-pie \
 *	    -fno-stack-protector -O2 -o compat32 compat32.c
 *
 * Usage: compat32 IMAGE BLOCKS (2048-byte blocks of IMAGE to serve).
 *
 * First every ioctl is tried from 32-bit code, good and bad arguments
 * alike, one line each: "ioctl NAME RESULT" (0 or -errno).  Then it asks
 * the module to serve IMAGE itself (VHBA_CTL_SET_DIRECT_READ, a vhba-lab
 * extension: -ENOTTY on other modules), prints "hctl H:C:T:L" and "ready",
 * and serves a minimal drive until killed: TEST UNIT READY, INQUIRY
 * (vendor "LAB32"), READ CAPACITY, READ(10) from IMAGE (one line
 * "read LBA COUNT" each), ILLEGAL REQUEST for everything else.
 */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define NR_EXIT		1
#define NR_READ		3
#define NR_WRITE	4
#define NR_OPEN		5
#define NR_LSEEK	19
#define NR_IOCTL	54

#define O_RDONLY	0
#define O_RDWR		2
#define EINTR		4

#define GET_ADDRESS	0x0BEEF001u
#define GET_DEVNUM	0x0BEEF002u
/* _IOW(0xBE, 0xD1, struct direct_read): 24 bytes on i386 as on x86_64 */
#define SET_DIRECT_READ	0x4018BED1u

#define BLOCK		2048
#define REQUEST_LEN	32
#define RESPONSE_LEN	12
#define DATA_MAX	(256 * 1024)

struct direct_read {
	int fd;
	u32 block_size;
	u64 offset;
	u64 blocks;
};

static u8 request[REQUEST_LEN + DATA_MAX];
static u8 response[RESPONSE_LEN + DATA_MAX];

static long syscall3(long nr, long a, long b, long c)
{
	long ret;

	__asm__ volatile("int $0x80"
			 : "=a"(ret)
			 : "a"(nr), "b"(a), "c"(b), "d"(c)
			 : "memory");
	return ret;
}

static void out(const char *text)
{
	long len = 0;

	while (text[len])
		len++;
	syscall3(NR_WRITE, 1, (long)text, len);
}

static void out_num(long value)
{
	char digits[16];
	int i = sizeof(digits) - 1;
	unsigned long v = value < 0 ? -value : value;

	digits[i] = 0;
	do {
		digits[--i] = '0' + v % 10;
		v /= 10;
	} while (v);
	if (value < 0)
		digits[--i] = '-';
	out(digits + i);
}

static void out_result(const char *name, long ret)
{
	out("ioctl ");
	out(name);
	out(" ");
	out_num(ret);
	out("\n");
}

static void quit(const char *why, long ret)
{
	out(why);
	out(" ");
	out_num(ret);
	out("\n");
	syscall3(NR_EXIT, 1, 0, 0);
	for (;;)
		;
}

static unsigned long parse_num(const char *text)
{
	unsigned long value = 0;

	while (*text >= '0' && *text <= '9')
		value = value * 10 + (*text++ - '0');
	return value;
}

static u32 get_be(const u8 *p, int bytes)
{
	u32 value = 0;

	while (bytes--)
		value = value << 8 | *p++;
	return value;
}

static u32 get_le32(const u8 *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (u32)p[3] << 24;
}

static void put_u32(u8 *p, u32 value)
{
	p[0] = value;
	p[1] = value >> 8;
	p[2] = value >> 16;
	p[3] = value >> 24;
}

static void put_be32(u8 *p, u32 value)
{
	p[0] = value >> 24;
	p[1] = value >> 16;
	p[2] = value >> 8;
	p[3] = value;
}

static void zero(u8 *p, long len)
{
	while (len--)
		*p++ = 0;
}

static void copy(u8 *dst, const char *src, long len)
{
	while (len--)
		*dst++ = *src++;
}

/* CHECK CONDITION with fixed-format sense: ILLEGAL REQUEST, @asc/00 */
static long illegal(u8 *data, u32 *status, u8 asc)
{
	zero(data, 18);
	data[0] = 0x70;
	data[2] = 0x05;
	data[7] = 10;
	data[12] = asc;
	*status = 2;
	return 18;
}

/* The answer to one command: data (or sense) bytes into @data. */
static long answer(const u8 *cdb, u32 data_len, int image, u32 blocks,
		   u8 *data, u32 *status)
{
	u32 lba, count;

	*status = 0;
	switch (cdb[0]) {
	case 0x00:	/* TEST UNIT READY */
		return 0;
	case 0x12:	/* INQUIRY */
		if (cdb[1] & 1)
			return illegal(data, status, 0x24);
		zero(data, 36);
		data[0] = 0x05;
		data[1] = 0x80;
		data[2] = 0x05;
		data[3] = 0x02;
		data[4] = 31;
		copy(data + 8, "LAB32   COMPAT32 DRIVE  1.0 ", 28);
		return data_len < 36 ? data_len : 36;
	case 0x25:	/* READ CAPACITY(10) */
		put_be32(data, blocks - 1);
		put_be32(data + 4, BLOCK);
		return 8;
	case 0x28:	/* READ(10) */
		lba = get_be(cdb + 2, 4);
		count = get_be(cdb + 7, 2);
		if (lba >= blocks || count > blocks - lba)
			return illegal(data, status, 0x21);
		if (count * BLOCK > DATA_MAX)
			return illegal(data, status, 0x24);
		if (syscall3(NR_LSEEK, image, lba * BLOCK, 0) < 0 ||
		    syscall3(NR_READ, image, (long)data, count * BLOCK) !=
		    (long)(count * BLOCK))
			quit("image read failed at", lba);
		out("read ");
		out_num(lba);
		out(" ");
		out_num(count);
		out("\n");
		return count * BLOCK;
	default:
		return illegal(data, status, 0x20);
	}
}

static void try_ioctls(int ctl, int image, u32 blocks)
{
	u32 address[4] = { 0 };
	u32 devnum = 0;
	struct direct_read bad = { image, 3, 0, blocks };
	struct direct_read good = { image, BLOCK, 0, blocks };

	out_result("get_address", syscall3(NR_IOCTL, ctl, GET_ADDRESS,
					   (long)address));
	out_result("get_devnum", syscall3(NR_IOCTL, ctl, GET_DEVNUM,
					  (long)&devnum));
	out_result("get_address_null", syscall3(NR_IOCTL, ctl, GET_ADDRESS, 0));
	out_result("get_address_top", syscall3(NR_IOCTL, ctl, GET_ADDRESS,
					       0xfffff000L));
	out_result("unknown", syscall3(NR_IOCTL, ctl, 0xdeadbeefu, 0));
	out_result("direct_read_null", syscall3(NR_IOCTL, ctl, SET_DIRECT_READ,
						0));
	out_result("direct_read_bad_block", syscall3(NR_IOCTL, ctl,
						     SET_DIRECT_READ,
						     (long)&bad));
	out_result("direct_read", syscall3(NR_IOCTL, ctl, SET_DIRECT_READ,
					   (long)&good));
	out("devnum ");
	out_num(devnum);
	out("\nhctl ");
	out_num(address[0]);
	out(":");
	out_num(address[1]);
	out(":");
	out_num(address[2]);
	out(":");
	out_num(address[3]);
	out("\nready\n");
}

static void serve(int ctl, int image, u32 blocks)
{
	long got, len;
	u32 status;

	for (;;) {
		got = syscall3(NR_READ, ctl, (long)request, sizeof(request));
		if (got == -EINTR)
			continue;
		if (got < REQUEST_LEN)
			quit("read from vhba_ctl returned", got);
		len = answer(request + 8, get_le32(request + 28), image,
			     blocks, response + RESPONSE_LEN, &status);
		response[0] = request[0];
		response[1] = request[1];
		response[2] = request[2];
		response[3] = request[3];
		put_u32(response + 4, status);
		put_u32(response + 8, len);
		got = syscall3(NR_WRITE, ctl, (long)response, RESPONSE_LEN + len);
		if (got < 0)
			quit("write to vhba_ctl returned", got);
	}
}

void start(u32 *stack)
{
	u32 argc = stack[0];
	char **argv = (char **)(stack + 1);
	long ctl, image;
	u32 blocks;

	if (argc != 3)
		quit("usage: compat32 IMAGE BLOCKS; argc", argc);
	blocks = parse_num(argv[2]);
	image = syscall3(NR_OPEN, (long)argv[1], O_RDONLY, 0);
	if (image < 0)
		quit("open image", image);
	ctl = syscall3(NR_OPEN, (long)"/dev/vhba_ctl", O_RDWR, 0);
	if (ctl < 0)
		quit("open /dev/vhba_ctl", ctl);
	try_ioctls(ctl, image, blocks);
	serve(ctl, image, blocks);
}

/* The entry point: hand the initial stack (argc, argv) to start(). */
__asm__(".globl _start\n"
	"_start:\n"
	"	xorl %ebp, %ebp\n"
	"	movl %esp, %eax\n"
	"	andl $-16, %esp\n"
	"	subl $12, %esp\n"
	"	pushl %eax\n"
	"	call start\n"
	"	hlt\n");
