#!/usr/bin/perl
# A Gearman::Client (libgearman-client-perl) driver; prints one JSON document on stdout.
#
#   perl client.pl do FUNC ARG [OPTS]      do_task: {"result", "fail", "status", "data", "warnings", "exceptions"}
#   perl client.pl submit FUNC ARG [OPTS]  the same through a Taskset; prints "handle H" on stderr as soon as
#                                          the server answered JOB_CREATED, then waits; the JSON adds "handle"
#   perl client.pl bg JOBS                 dispatch_background of each [FUNC, ARG, OPTS] of the JSON array JOBS:
#                                          [handle, ...]
#   perl client.pl status HANDLE...        get_status of each: [{"known", "running", "progress", "percent"} | null]
#   perl client.pl server_status           get_job_server_status: {FUNCTION: {"queued", "running", "capable"}}
#
# OPTS is a JSON object: Gearman::Task options (uniq, priority, high_priority, retry_count, timeout; timeout
# defaults to 15 s so no call can hang) plus "exceptions" (a Gearman::Client option: OPTION_REQ exceptions).
# The server comes from GEARMAN_HOST (default 127.0.0.1) and GEARMAN_PORT.
use strict;
use warnings;
use Gearman::Client;
use JSON::PP;
use Storable ();

$| = 1;
{ my $old = select(STDERR); $| = 1; select($old); }

my $json = JSON::PP->new->canonical->allow_nonref;
my $host = $ENV{GEARMAN_HOST} || '127.0.0.1';
my $port = $ENV{GEARMAN_PORT} or die "GEARMAN_PORT is not set\n";
my ($cmd, @args) = @ARGV;
die "usage: client.pl do|submit|bg|status|server_status ...\n" unless $cmd;

sub new_client {
    my (%opts) = @_;
    return Gearman::Client->new(job_servers => ["$host:$port"], %opts);
}

# Task options plus callbacks that fill %$out.
sub task_opts {
    my ($opts, $out) = @_;
    my %task = map { $_ => $opts->{$_} } grep { $_ ne 'exceptions' } keys %$opts;
    $task{timeout} = 15 unless exists $task{timeout};
    @$out{qw(fail status data warnings exceptions)} = ([], [], [], [], []);
    $task{on_fail}    = sub { push @{ $out->{fail} }, defined $_[0] ? "$_[0]" : undef };
    $task{on_status}  = sub { push @{ $out->{status} }, [@_] };
    $task{on_data}    = sub { push @{ $out->{data} }, ${ $_[0] } };
    $task{on_warning} = sub { push @{ $out->{warnings} }, ${ $_[0] } };
    $task{on_exception} = sub {
        # Gearman::Worker sends Storable::nfreeze(\$error); anything else is passed on as is.
        my $raw = shift;
        my $thawed = eval { Storable::thaw($raw) };
        push @{ $out->{exceptions} }, ref $thawed eq 'SCALAR' ? $$thawed : $raw;
    };
    return \%task;
}

if ($cmd eq 'do' || $cmd eq 'submit') {
    my ($func, $arg, $opts_json) = @args;
    my $opts   = $opts_json ? $json->decode($opts_json) : {};
    my $client = new_client(exceptions => $opts->{exceptions} ? 1 : 0);
    my %out;
    my $task = task_opts($opts, \%out);
    if ($cmd eq 'do') {
        my $ref = $client->do_task($func, $arg, $task);
        $out{result} = defined $ref ? $$ref : undef;
    }
    else {
        my $result;
        my $on_complete = sub { $result = ${ $_[0] } };
        my $ts = $client->new_task_set;
        my $handle = $ts->add_task($func, $arg, { %$task, on_complete => $on_complete });
        print STDERR 'handle ', (defined $handle ? $handle : ''), "\n";
        $ts->wait(timeout => $task->{timeout});
        @out{qw(result handle)} = ($result, $handle);
    }
    print $json->encode(\%out), "\n";
}
elsif ($cmd eq 'bg') {
    my $client = new_client();
    my @handles;
    for my $job (@{ $json->decode($args[0]) }) {
        my ($func, $arg, $opts) = @$job;
        push @handles, $client->dispatch_background($func, $arg, $opts || {});
    }
    print $json->encode(\@handles), "\n";
}
elsif ($cmd eq 'status') {
    my $client = new_client();
    my @all;
    for my $handle (@args) {
        my $st = $client->get_status($handle);
        push @all, $st
            ? { known => $st->known, running => $st->running, progress => $st->progress, percent => $st->percent }
            : undef;
    }
    print $json->encode(\@all), "\n";
}
elsif ($cmd eq 'server_status') {
    my $all = new_client()->get_job_server_status;
    print $json->encode($all->{"$host:$port"} || {}), "\n";
}
else {
    die "unknown command $cmd\n";
}
