#!/usr/bin/perl
# A Gearman::Worker (libgearman-client-perl) serving the interop tests' functions.
#
#   perl worker.pl [--id CLIENT_ID] [--record FILE]
#
# The server comes from GEARMAN_HOST (default 127.0.0.1) and GEARMAN_PORT.
#
#   reverse  : the workload reversed
#   empty    : "" (Gearman::Worker then sends WORK_COMPLETE with only the handle)
#   zero     : "0" (ditto: the worker tests the result for truth, so "0" is sent as nothing)
#   progress : workload N; set_status(i, N) for i = 1..N, then "done N"
#   chatter  : send_work_data "d1", send_work_warning "w1", send_work_data "d2", then "end"
#   undef    : returns undef (Gearman::Worker sends WORK_FAIL)
#   die      : dies "boom: <workload>" (Gearman::Worker sends WORK_EXCEPTION, then WORK_FAIL)
#   gated    : set_status(3, 7), then waits (at most 20 s) for the file named by the workload: "released"
#   record   : "ok <workload>"
#   count    : "<jobs this process has run>:<workload>"
#
# With --record, each job appends "PID FUNCTION WORKLOAD" to FILE when it starts,
# so tests can see which jobs ran, in which order, and how often.
use strict;
use warnings;
use Gearman::Worker;
use Getopt::Long;
use Time::HiRes qw(sleep time);

$| = 1;
{ my $old = select(STDERR); $| = 1; select($old); }

my ($id, $record) = ('perl-worker', '');
GetOptions('id=s' => \$id, 'record=s' => \$record) or die "usage: worker.pl [--id ID] [--record FILE]\n";
my $host = $ENV{GEARMAN_HOST} || '127.0.0.1';
my $port = $ENV{GEARMAN_PORT} or die "GEARMAN_PORT is not set\n";

my $worker = Gearman::Worker->new(job_servers => ["$host:$port"], client_id => $id);
my $count = 0;

my %functions = (
    reverse  => sub { return scalar reverse $_[0]->arg },
    empty    => sub { return '' },
    zero     => sub { return '0' },
    progress => sub {
        my $job = shift;
        my $n   = $job->arg;
        $job->set_status($_, $n) for 1 .. $n;
        return "done $n";
    },
    chatter => sub {
        my $job = shift;
        $worker->send_work_data($job, 'd1');
        $worker->send_work_warning($job, 'w1');
        $worker->send_work_data($job, 'd2');
        return 'end';
    },
    undef => sub { return undef },
    die   => sub { die 'boom: ' . $_[0]->arg . "\n" },
    gated => sub {
        my $job = shift;
        $job->set_status(3, 7);
        my $end = time + 20;
        sleep 0.01 until -e $job->arg || time > $end;
        return -e $job->arg ? 'released' : undef;
    },
    record => sub { return 'ok ' . $_[0]->arg },
    count  => sub { $count++; return "$count:" . $_[0]->arg },
);

sub note {
    my ($fn, $arg) = @_;
    return unless $record;
    open my $fh, '>>', $record or die "cannot append to $record: $!\n";
    print $fh "$$ $fn $arg\n";
    close $fh;
}

for my $fn (sort keys %functions) {
    my $handler = $functions{$fn};
    $worker->register_function($fn => sub { my $job = shift; note($fn, $job->arg); return $handler->($job) })
        or die "register_function($fn) failed\n";
}

# work() loops forever; it dies on a packet it does not expect (e.g. an ERROR
# answering a late WORK_FAIL), so keep serving after logging that.
while (1) {
    eval { $worker->work(); 1 } or do { print STDERR "work() died: $@"; sleep 0.05; };
}
