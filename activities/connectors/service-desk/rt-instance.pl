#!/usr/bin/perl
# A private Request Tracker for the demo and the tests (driven by rt-server.ts next to this
# file; docs/rt.md).
#
#   rt-instance.pl setup
#     On a freshly initialised database (rt-setup-database --action init): the "Access requests"
#     queue, its custom fields, the users, the groups and the rights. Prints what it made as one
#     JSON line. Run once per template database, never against a running server.
#   rt-instance.pl serve --host 127.0.0.1 --port N --tokens FILE
#     Grants the rights setup names where missing, mints the API tokens (when FILE does not
#     exist yet) and serves RT in this same process.
#   rt-instance.pl token --user NAME --description TEXT
#     Mints one more API token for an existing user and prints its secret; safe while serving.
#   rt-instance.pl password --user NAME   (the password on stdin)
#     Sets an existing user's web and basic-auth password, which REST 2.0 can not; safe while serving.
#
# Both read the configuration named by RT_SITE_CONFIG / RT_SITE_CONFIG_DIR, never /etc.
use strict;
use warnings;

use lib '/usr/local/share/request-tracker5/lib', '/usr/share/request-tracker5/lib';
use Getopt::Long qw(GetOptionsFromArray);
use JSON ();

require RT;

my $QUEUE = 'Access requests';
my $REQUESTERS_GROUP = 'Access requesters';
my $APPROVERS_GROUP = 'Access approvers';

# All free text, one value each. The catalog (entitlement names, identities, duration limits)
# lives in accessloop, which checks every value against it and answers on the ticket; a Select
# list would be a second copy to keep in sync. No validation pattern either: on REST create RT
# drops a value that fails the pattern without a word (201, the field just empty), so a
# mistyped Duration would silently become the entitlement's default instead of a question back.
my @FIELDS = (
    { Name => 'Entitlement',   Description => 'Catalog name of the entitlement requested' },
    { Name => 'Subject',       Description => 'Username of the identity that is to hold the access (the requester when empty)' },
    { Name => 'Duration',      Description => 'How long the access is needed, ISO 8601 (PT8H, P3D); empty for the default' },
    { Name => 'Justification', Description => 'Why the access is needed' },
);

# Least privilege, per principal, on the queue only (rights on a queue cover its tickets and
# the custom fields applied to it). docs/rt.md#rights says why each one is there.
my @INTEGRATION_RIGHTS = qw(SeeQueue ShowTicket ShowTicketComments SeeCustomField CommentOnTicket ReplyToTicket ModifyTicket);
# SeeQueue for people in the web UI: its create form lists a queue's custom fields only to who
# may see the queue (RT::Queue::TicketCustomFields), so without it a person can not fill them in.
my @REQUESTER_RIGHTS   = qw(SeeQueue CreateTicket SeeCustomField SetInitialCustomField);
# Any ticket of the queue, read and answered; what was requested and the ticket's state stay
# out of reach (no ModifyTicket, no ModifyCustomField): an approver decides in words.
my @APPROVER_RIGHTS    = qw(SeeQueue ShowTicket ShowTicketComments SeeCustomField ReplyToTicket CommentOnTicket);
# ModifyTicket only through the role, so only on the requester's own tickets: withdrawing a
# request (status rejected) and moving its Due date both need it, RT has no narrower right.
my @REQUESTOR_ROLE_RIGHTS = qw(ShowTicket SeeCustomField ReplyToTicket ModifyTicket);

my %USERS = (
    integration => { Name => 'accessloop', EmailAddress => 'accessloop@accessloop.test', RealName => 'accessloop integration', Privileged => 1 },
    requester   => { Name => 'requester',  EmailAddress => 'requester@accessloop.test',  RealName => 'Access Requester',        Privileged => 0 },
);

sub fail { print STDERR "rt-instance.pl: @_\n"; exit 1 }

sub must {
    my ($what, $ok, $msg) = @_;
    fail("$what: " . ($msg // 'failed')) unless $ok;
    return $ok;
}

sub init_rt {
    RT->LoadConfig();
    RT->InitPluginPaths();
    RT->InitLogging();
    require RT::Handle;
    my ($integrity, $state, $msg) = RT::Handle->CheckIntegrity;
    fail('database ' . RT->Config->Get('DatabaseName') . " is not an initialised RT database ($state): $msg") unless $integrity;
    RT->Init(Heavy => 1);
    my ($compatible, $why) = RT::Handle->CheckCompatibility($RT::Handle->dbh, 'post');
    fail($why) unless $compatible;
}

sub grant {
    my ($principal, $right, $object) = @_;
    my ($ok, $msg) = $principal->GrantRight(Right => $right, Object => $object);
    # a second run over the same database finds its grants in place
    must("granting $right", $ok || ($msg // '') =~ /already has the right/, $msg);
}

sub user_defined_group {
    my ($name, $description) = @_;
    my $group = RT::Group->new(RT->SystemUser);
    $group->LoadUserDefinedGroup($name);
    unless ($group->Id) {
        must("creating group $name", $group->CreateUserDefinedGroup(Name => $name, Description => $description));
    }
    return $group;
}

# Every right of the lists above, granted where missing: by setup on a new database, and by
# serve on each start, so a data dir that keeps its database across an upgrade of this script
# (the demo's does) gets the rights the current one names. Grants only, never revokes.
sub grant_rights {
    my $system = RT->SystemUser;
    my $queue = RT::Queue->new($system);
    $queue->Load($QUEUE);
    fail("queue $QUEUE does not exist") unless $queue->Id;
    my $integration = RT::User->new($system);
    $integration->Load($USERS{integration}{Name});
    fail("user $USERS{integration}{Name} does not exist") unless $integration->Id;
    my %groups;
    for my $name ($REQUESTERS_GROUP, $APPROVERS_GROUP) {
        $groups{$name} = RT::Group->new($system);
        $groups{$name}->LoadUserDefinedGroup($name);
        fail("group $name does not exist") unless $groups{$name}->Id;
    }
    grant($integration->PrincipalObj, $_, $queue) for @INTEGRATION_RIGHTS;
    grant($groups{$REQUESTERS_GROUP}->PrincipalObj, $_, $queue) for @REQUESTER_RIGHTS;
    grant($groups{$APPROVERS_GROUP}->PrincipalObj, $_, $queue) for @APPROVER_RIGHTS;
    grant($queue->RoleGroup('Requestor')->PrincipalObj, $_, $queue) for @REQUESTOR_ROLE_RIGHTS;
}

sub setup {
    init_rt();
    my $system = RT->SystemUser;

    my $queue = RT::Queue->new($system);
    $queue->Load($QUEUE);
    unless ($queue->Id) {
        must("creating queue $QUEUE", $queue->Create(
            Name              => $QUEUE,
            Description       => 'Requests for access, fulfilled by accessloop',
            CorrespondAddress => 'access@accessloop.test',
            CommentAddress    => 'access-comment@accessloop.test',
        ));
    }

    my %field_ids;
    for my $spec (@FIELDS) {
        my $cf = RT::CustomField->new($system);
        $cf->LoadByName(Name => $spec->{Name}, LookupType => RT::Ticket->CustomFieldLookupType, ObjectId => $queue->Id);
        unless ($cf->Id) {
            my ($ok, $msg) = $cf->Create(
                Name        => $spec->{Name},
                Type        => 'Freeform',
                MaxValues   => 1,
                LookupType  => RT::Ticket->CustomFieldLookupType,
                Description => $spec->{Description},
            );
            must("creating custom field $spec->{Name}", $ok, $msg);
        }
        unless ($cf->IsAdded($queue->Id)) {
            must("applying custom field $spec->{Name} to $QUEUE", $cf->AddToObject($queue));
        }
        $field_ids{ $spec->{Name} } = $cf->Id;
    }

    my %user_ids;
    for my $key (sort keys %USERS) {
        my $spec = $USERS{$key};
        my $user = RT::User->new($system);
        $user->Load($spec->{Name});
        unless ($user->Id) {
            my ($ok, $msg) = $user->Create(%$spec);
            must("creating user $spec->{Name}", $ok, $msg);
        }
        $user_ids{$key} = $user->Id;
    }

    my $requesters = user_defined_group($REQUESTERS_GROUP, "May open tickets in $QUEUE");
    my $approvers = user_defined_group($APPROVERS_GROUP, "May read and answer every ticket in $QUEUE");
    unless ($requesters->HasMember($user_ids{requester})) {
        must("adding requester to $REQUESTERS_GROUP", $requesters->AddMember($user_ids{requester}));
    }

    grant_rights();

    print JSON->new->canonical->encode({
        queue        => { id => $queue->Id, name => $QUEUE },
        customFields => \%field_ids,
        users        => { map { ($_ => { id => $user_ids{$_}, name => $USERS{$_}{Name} }) } keys %USERS },
        requestersGroup => { id => $requesters->Id, name => $REQUESTERS_GROUP },
        approversGroup  => { id => $approvers->Id, name => $APPROVERS_GROUP },
        rights       => {
            integration   => \@INTEGRATION_RIGHTS,
            requesters    => \@REQUESTER_RIGHTS,
            approvers     => \@APPROVER_RIGHTS,
            requestorRole => \@REQUESTOR_ROLE_RIGHTS,
        },
    }), "\n";
}

sub mint_token {
    my ($name, $description) = @_;
    my $user = RT::User->new(RT->SystemUser);
    $user->Load($name);
    fail("user $name does not exist") unless $user->Id;
    my $token = RT::AuthToken->new(RT->SystemUser);
    my ($id, $msg, $secret) = $token->Create(Owner => $user->Id, Description => $description);
    must("minting a token for $name", $id, $msg);
    return $secret;
}

sub mint_tokens {
    my ($file) = @_;
    return if -e $file;
    my %tokens;
    for my $who ([integration => $USERS{integration}{Name}], [requester => $USERS{requester}{Name}], [admin => 'root']) {
        my ($key, $name) = @$who;
        $tokens{$key} = mint_token($name, "accessloop ($key)");
    }
    # rt-setup-database leaves root with the password 'password', which the web UI and REST's
    # basic auth accept: every data dir gets its own instead, kept with the tokens.
    open(my $random, '<:raw', '/dev/urandom') or fail("cannot read /dev/urandom: $!");
    read($random, my $bytes, 18) == 18 or fail('short read from /dev/urandom');
    close($random);
    $tokens{rootPassword} = unpack('H*', $bytes);
    my $root = RT::User->new(RT->SystemUser);
    $root->Load('root');
    must('setting the root password', $root->SetPassword($tokens{rootPassword}));
    my $tmp = "$file.tmp.$$";
    umask 077;
    open(my $fh, '>', $tmp) or fail("cannot write $tmp: $!");
    print $fh JSON->new->canonical->encode(\%tokens);
    close($fh) or fail("cannot write $tmp: $!");
    rename($tmp, $file) or fail("cannot rename $tmp to $file: $!");
}

sub serve {
    my @args = @_;
    my ($host, $port, $tokens);
    GetOptionsFromArray(\@args, 'host=s' => \$host, 'port=i' => \$port, 'tokens=s' => \$tokens)
        or fail('usage: serve --host H --port N --tokens FILE');
    fail('usage: serve --host H --port N --tokens FILE') unless $host && $port && $tokens;

    # The same start-up as /usr/share/request-tracker5/libexec/rt-server, minus its install-mode
    # fallback (a missing database is an error here) and its SIGINT chown of /var/lib.
    init_rt();
    grant_rights();
    mint_tokens($tokens);
    $RT::Handle->dbh->disconnect if $RT::Handle->dbh;
    $RT::Handle->dbh(undef);
    undef $RT::Handle;

    require RT::PlackRunner;
    # One process, no forked workers: Starlet's workers outlive a SIGKILLed master and keep
    # serving the port, which is exactly the orphan the watchdog exists to prevent.
    my $runner = RT::PlackRunner->new(server => 'Standalone', env => 'deployment');
    $runner->parse_options('--host', $host, '--port', $port);
    $SIG{PIPE} = 'IGNORE';
    # The watchdog's stop is SIGTERM: end as a clean exit (END blocks, database closed), not by the signal.
    $SIG{TERM} = sub { exit 0 };
    $runner->run;
}

sub token {
    my @args = @_;
    my ($name, $description);
    GetOptionsFromArray(\@args, 'user=s' => \$name, 'description=s' => \$description)
        or fail('usage: token --user NAME --description TEXT');
    fail('usage: token --user NAME --description TEXT') unless $name && $description;
    init_rt();
    # The secret goes to stdout only, for the caller to keep; RT stores its bcrypt hash.
    print mint_token($name, $description), "\n";
}

sub password {
    my @args = @_;
    my $name;
    GetOptionsFromArray(\@args, 'user=s' => \$name) or fail('usage: password --user NAME (the password on stdin)');
    fail('usage: password --user NAME (the password on stdin)') unless $name;
    # On stdin, never in argv, where ps shows it to every user of the machine.
    my $password = do { local $/; <STDIN> } // '';
    fail('no password on stdin') unless length $password;
    init_rt();
    my $user = RT::User->new(RT->SystemUser);
    $user->Load($name);
    fail("user $name does not exist") unless $user->Id;
    must("setting the password of $name", $user->SetPassword($password));
}

my ($command, @rest) = @ARGV;
if (($command // '') eq 'setup') { setup() }
elsif (($command // '') eq 'serve') { serve(@rest) }
elsif (($command // '') eq 'token') { token(@rest) }
elsif (($command // '') eq 'password') { password(@rest) }
else { fail('usage: rt-instance.pl setup | serve --host H --port N --tokens FILE | token --user NAME --description TEXT | password --user NAME') }
