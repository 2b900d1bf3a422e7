<?php
// Shared helpers for the interop PHP scripts (php-gearman extension, libgearman based).
// The server comes from the environment: GEARMAN_HOST (default 127.0.0.1), GEARMAN_PORT.
function srv_host() { return getenv('GEARMAN_HOST') ?: '127.0.0.1'; }
function srv_port() { return (int)getenv('GEARMAN_PORT'); }

function new_client($timeout_ms = 10000) {
    $c = new GearmanClient();
    $c->addServer(srv_host(), srv_port());
    $c->setTimeout($timeout_ms);
    return $c;
}

function new_worker() {
    $w = new GearmanWorker();
    $w->addServer(srv_host(), srv_port());
    return $w;
}

// One JSON document on stdout: the only thing the Python side parses.
function out($value) {
    echo json_encode($value, JSON_UNESCAPED_SLASHES), "\n";
}
