// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {NoxTest} from "./utils/NoxTest.sol";
import {NoxRegistry} from "../src/NoxRegistry.sol";
import {NoxTestToken} from "../src/NoxTestToken.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

contract NoxRegistryTest is NoxTest {
    NoxTestToken token;
    NoxRegistry registry;

    address admin = address(0xA11CE);
    address slasher = address(0x51A5);
    address reporter = address(0xBEEF);
    address alice = address(0xA1);
    address bob = address(0xB0);

    uint256 constant MIN = 1000e18;
    uint64 constant DELAY = 7 days;
    uint16 constant BURN = 5000;

    function setUp() public {
        token = new NoxTestToken(0);
        registry = new NoxRegistry(token, admin, MIN, DELAY, BURN);
        bytes32 slasherRole = registry.SLASHER_ROLE();
        vm.prank(admin);
        registry.grantRole(slasherRole, slasher);
        for (uint256 i = 0; i < 2; ++i) {
            address who = i == 0 ? alice : bob;
            token.mint(who, 1_000_000e18);
            vm.prank(who);
            token.approve(address(registry), type(uint256).max);
        }
    }

    bytes32 constant SALT = keccak256("salt");
    string constant ADDR = "/ip4/127.0.0.1/tcp/9000";

    function _commit(address who, bytes32 key, uint256 amount) internal {
        bytes32 c = keccak256(abi.encode(key, who, SALT));
        vm.prank(who);
        registry.commit(c, amount);
    }

    function _reveal(address who, bytes32 key, NoxRegistry.Role role) internal {
        vm.prank(who);
        registry.register(key, ADDR, role, SALT);
    }

    /// @dev Commits, moves to the next block and reveals.
    function _register(address who, bytes32 key, NoxRegistry.Role role, uint256 amount) internal {
        _commit(who, key, amount);
        vm.roll(block.number + 1);
        _reveal(who, key, role);
    }

    // ----------------------------------------------------------------- register

    function test_Register_RecordsNodeAndPullsStake() public {
        _commit(alice, bytes32(uint256(1)), MIN);
        vm.assertEq(token.balanceOf(address(registry)), MIN, "stake pulled at commit");
        uint256 commitBlock = block.number;
        vm.roll(commitBlock + 1);
        uint8 layer = registry.relayLayer(alice, blockhash(commitBlock));
        vm.assertEq(uint256(registry.commitmentLayer(alice)), uint256(layer), "commitment layer");
        vm.expectEmit(true, true, false, true);
        emit NoxRegistry.NodeRegistered(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, layer, MIN, ADDR);
        _reveal(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay);
        NoxRegistry.Node memory n = registry.getNode(alice);
        vm.assertTrue(n.registered, "registered");
        vm.assertEq(n.stake, MIN, "stake");
        vm.assertEq(uint256(n.layer), uint256(layer), "layer");
        vm.assertEq(uint256(registry.layerOf(alice)), uint256(layer), "layerOf");
        vm.assertEq(token.balanceOf(address(registry)), MIN, "balance");
        vm.assertEq(registry.nodeCount(), 1, "count");
        vm.assertEq(registry.operatorOfIdentity(bytes32(uint256(1))), alice, "identity");
        (address claimant, uint64 claimBlock) = registry.identityClaims(bytes32(uint256(1)));
        vm.assertEq(claimant, alice, "claimant");
        vm.assertEq(uint256(claimBlock), commitBlock, "claim block");
        (bytes32 pending,,) = registry.commitments(alice);
        vm.assertEq(pending, bytes32(0), "commitment consumed");
        vm.assertTrue(registry.isActive(alice), "active");
        vm.assertEq(registry.topologyFingerprint(), keccak256(abi.encodePacked(alice)), "fingerprint");
    }

    function test_Register_ExitIsLayerTwo() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Exit, MIN);
        vm.assertEq(uint256(registry.layerOf(alice)), 2, "exit layer");
        vm.assertEq(uint256(registry.getNode(alice).layer), 2, "stored layer");
    }

    function test_RevertWhen_LayerOfUnregistered() public {
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.NotRegistered.selector, alice));
        registry.layerOf(alice);
    }

    function test_RelayLayer_MatchesSha256Formula() public view {
        for (uint160 i = 1; i < 50; ++i) {
            address a = address(i * 0x1234567);
            bytes32 seed = keccak256(abi.encode(i));
            uint256 expected = uint256(sha256(abi.encodePacked(a, seed))) % 2;
            vm.assertEq(uint256(registry.relayLayer(a, seed)), expected, "layer formula");
        }
    }

    function test_RevertWhen_StakeBelowMinimum() public {
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.InsufficientStake.selector, MIN - 1, MIN));
        _commit(alice, bytes32(uint256(1)), MIN - 1);
    }

    function test_RevertWhen_MinimumRaisedBeforeReveal() public {
        _commit(alice, bytes32(uint256(1)), MIN);
        vm.prank(admin);
        registry.setMinStake(MIN + 1);
        vm.roll(block.number + 1);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.InsufficientStake.selector, MIN, MIN + 1));
        _reveal(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay);
    }

    function test_RevertWhen_RegisteringTwice() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.AlreadyRegistered.selector, alice));
        _commit(alice, bytes32(uint256(2)), MIN);
    }

    function test_RevertWhen_IdentityKeyTaken() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
        _commit(bob, bytes32(uint256(1)), MIN);
        vm.roll(block.number + 1);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.IdentityKeyTaken.selector, bytes32(uint256(1)), alice));
        _reveal(bob, bytes32(uint256(1)), NoxRegistry.Role.Relay);
    }

    function test_RevertWhen_IdentityKeyZero() public {
        _commit(alice, bytes32(0), MIN);
        vm.roll(block.number + 1);
        vm.expectRevert(NoxRegistry.ZeroIdentityKey.selector);
        _reveal(alice, bytes32(0), NoxRegistry.Role.Relay);
    }

    function test_RevertWhen_MultiaddrEmptyOrTooLong() public {
        _commit(alice, bytes32(uint256(1)), MIN);
        vm.roll(block.number + 1);
        vm.expectRevert(NoxRegistry.InvalidMultiaddr.selector);
        vm.prank(alice);
        registry.register(bytes32(uint256(1)), "", NoxRegistry.Role.Relay, SALT);
        bytes memory long = new bytes(257);
        vm.expectRevert(NoxRegistry.InvalidMultiaddr.selector);
        vm.prank(alice);
        registry.register(bytes32(uint256(1)), string(long), NoxRegistry.Role.Relay, SALT);
    }

    function test_RevertWhen_RegisteringWhilePaused() public {
        vm.prank(admin);
        registry.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        _commit(alice, bytes32(uint256(1)), MIN);
    }

    // ----------------------------------------------------------------- commit and reveal

    function test_RevertWhen_RevealInTheCommitBlock() public {
        _commit(alice, bytes32(uint256(1)), MIN);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.CommitmentTooRecent.selector, uint64(block.number + 1)));
        _reveal(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay);
    }

    function test_RevertWhen_RevealAfterTheWindow() public {
        _commit(alice, bytes32(uint256(1)), MIN);
        uint64 last = uint64(block.number) + registry.COMMITMENT_WINDOW();
        vm.roll(last + 1);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.CommitmentExpired.selector, last));
        _reveal(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.CommitmentExpired.selector, last));
        registry.commitmentLayer(alice);
        // The last block of the window still reveals.
        vm.roll(last);
        _reveal(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay);
        vm.assertTrue(registry.getNode(alice).registered, "registered in the last block");
    }

    function test_RevertWhen_RevealDoesNotMatchTheCommitment() public {
        _commit(alice, bytes32(uint256(1)), MIN);
        vm.roll(block.number + 1);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.CommitmentMismatch.selector, alice));
        _reveal(alice, bytes32(uint256(2)), NoxRegistry.Role.Relay);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.CommitmentMismatch.selector, alice));
        vm.prank(alice);
        registry.register(bytes32(uint256(1)), ADDR, NoxRegistry.Role.Relay, bytes32(uint256(SALT) + 1));
    }

    function test_RevertWhen_RevealWithoutCommitment() public {
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.NoCommitment.selector, alice));
        _reveal(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.NoCommitment.selector, alice));
        registry.commitmentLayer(alice);
    }

    function test_RevertWhen_CommittingTwiceOrZero() public {
        _commit(alice, bytes32(uint256(1)), MIN);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.CommitmentPending.selector, alice));
        _commit(alice, bytes32(uint256(2)), MIN);
        vm.expectRevert(NoxRegistry.ZeroCommitment.selector);
        vm.prank(bob);
        registry.commit(bytes32(0), MIN);
    }

    function test_CancelCommitment_StakeWaitsForTheDelay() public {
        _commit(alice, bytes32(uint256(1)), MIN);
        vm.prank(alice);
        registry.cancelCommitment();
        NoxRegistry.Node memory n = registry.getNode(alice);
        vm.assertFalse(n.registered, "not registered");
        vm.assertEq(n.pendingUnstake, MIN, "pending");
        vm.assertEq(uint256(n.unstakeAvailableAt), block.timestamp + DELAY, "after the delay");
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.UnstakePending.selector, alice));
        _commit(alice, bytes32(uint256(1)), MIN);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.NoCommitment.selector, alice));
        vm.prank(alice);
        registry.cancelCommitment();
        uint256 before = token.balanceOf(alice);
        vm.warp(block.timestamp + DELAY);
        vm.prank(alice);
        registry.executeUnstake();
        vm.assertEq(token.balanceOf(alice), before + MIN, "paid back");
    }

    // ----------------------------------------------------------------- squatting

    /// The squatter sees the owner's reveal in the mempool, commits to the same
    /// identity key and gets its own reveal mined first: the owner's reveal, which
    /// carries the older commitment, still registers and removes the squatter.
    function test_Squat_FrontRunnerLosesTheIdentityToTheOlderCommitment() public {
        bytes32 key = keccak256("node key");
        _commit(alice, key, MIN); // hidden: nobody can tell which key
        vm.roll(block.number + 5);
        // Alice's reveal is pending; Bob front-runs it with a commitment and a reveal of his own.
        bytes32 bobSalt = keccak256("bob");
        bytes32 bobCommitment = registry.commitmentOf(key, bob, bobSalt);
        vm.prank(bob);
        registry.commit(bobCommitment, MIN);
        vm.roll(block.number + 1);
        vm.prank(bob);
        registry.register(key, "/ip4/198.51.100.1/tcp/1", NoxRegistry.Role.Relay, bobSalt);
        vm.assertEq(registry.operatorOfIdentity(key), bob, "squatted for a moment");

        vm.expectEmit(true, true, true, true);
        emit NoxRegistry.IdentityReclaimed(key, bob, alice);
        _reveal(alice, key, NoxRegistry.Role.Relay);
        vm.assertEq(registry.operatorOfIdentity(key), alice, "owner holds its key");
        vm.assertTrue(registry.getNode(alice).registered, "owner registered");
        NoxRegistry.Node memory b = registry.getNode(bob);
        vm.assertFalse(b.registered, "squatter removed");
        vm.assertEq(b.pendingUnstake, MIN, "squatter's stake waits for the delay");
        vm.assertEq(registry.nodeCount(), 1, "one node");
        vm.assertEq(registry.topologyFingerprint(), keccak256(abi.encodePacked(alice)), "fingerprint");
        // The squatter cannot take it back.
        vm.warp(block.timestamp + DELAY);
        vm.prank(bob);
        registry.executeUnstake();
        _commit(bob, key, MIN);
        vm.roll(block.number + 1);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.IdentityKeyTaken.selector, key, alice));
        _reveal(bob, key, NoxRegistry.Role.Relay);
    }

    /// Once its owner revealed it, a node's key stays the owner's: a squatter who
    /// waits for the node to leave cannot register it, the owner can come back.
    function test_Squat_KeyOfANodeThatLeftStaysWithItsOwner() public {
        bytes32 key = keccak256("node key");
        _register(alice, key, NoxRegistry.Role.Relay, MIN);
        vm.prank(alice);
        registry.requestUnstake();
        vm.assertEq(registry.operatorOfIdentity(key), address(0), "no holder while away");
        _commit(bob, key, MIN);
        vm.roll(block.number + 1);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.IdentityKeyTaken.selector, key, alice));
        _reveal(bob, key, NoxRegistry.Role.Relay);
        vm.prank(bob);
        registry.cancelCommitment();

        vm.warp(block.timestamp + DELAY);
        vm.prank(alice);
        registry.executeUnstake();
        _register(alice, key, NoxRegistry.Role.Exit, MIN);
        vm.assertEq(registry.operatorOfIdentity(key), alice, "owner back");
    }

    /// Two commitments mined in the same block: the first revealed keeps the key.
    function test_Squat_EqualCommitmentsKeepTheFirstReveal() public {
        bytes32 key = keccak256("node key");
        _commit(alice, key, MIN);
        _commit(bob, key, MIN);
        vm.roll(block.number + 1);
        _reveal(alice, key, NoxRegistry.Role.Relay);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.IdentityKeyTaken.selector, key, alice));
        _reveal(bob, key, NoxRegistry.Role.Relay);
    }

    // ----------------------------------------------------------------- layer grinding

    /// The operator's address and everything it can see when it sends its
    /// commitment leave the layer open: the hash of the block that mines the
    /// commitment decides it. The same operator, same key and same chain state
    /// end in layer 0 or 1 depending only on that hash.
    function test_Grinding_LayerIsFixedByTheCommitBlockHash() public {
        bytes32 key = keccak256("node key");
        _commit(alice, key, MIN);
        uint256 commitBlock = block.number;
        vm.roll(commitBlock + 1);
        bool[2] memory seen;
        for (uint256 i = 0; i < 64 && !(seen[0] && seen[1]); ++i) {
            uint256 snap = vm.snapshotState();
            bytes32 h = keccak256(abi.encode("block", i));
            vm.setBlockhash(commitBlock, h);
            _reveal(alice, key, NoxRegistry.Role.Relay);
            uint8 layer = registry.getNode(alice).layer;
            vm.assertEq(uint256(layer), uint256(registry.relayLayer(alice, h)), "layer from the block hash");
            seen[layer] = true;
            vm.revertToState(snap);
        }
        vm.assertTrue(seen[0] && seen[1], "both layers reachable from one submission");
    }

    /// Grinding addresses off chain is useless: for any address both layers
    /// remain possible, each with the chance of a coin toss over block hashes.
    function testFuzz_Grinding_NoAddressIsBoundToALayer(address operator) public view {
        uint256 ones;
        for (uint256 i = 0; i < 64; ++i) {
            ones += registry.relayLayer(operator, keccak256(abi.encode(i)));
        }
        vm.assertTrue(ones > 0 && ones < 64, "both layers");
    }

    /// A relay whose layer did not suit it can only try again by leaving its
    /// stake for the unstake delay: cancelling or unstaking both lock it.
    function test_Grinding_RetryingCostsTheUnstakeDelay() public {
        _commit(alice, bytes32(uint256(1)), MIN);
        vm.roll(block.number + 1);
        vm.prank(alice);
        registry.cancelCommitment();
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.UnstakePending.selector, alice));
        _commit(alice, bytes32(uint256(1)), MIN);
        _register(bob, bytes32(uint256(2)), NoxRegistry.Role.Relay, MIN);
        vm.prank(bob);
        registry.requestUnstake();
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.UnstakePending.selector, bob));
        _commit(bob, bytes32(uint256(2)), MIN);
    }

    // ----------------------------------------------------------------- stake and unstake

    function test_AddStake() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
        vm.prank(alice);
        registry.addStake(5e18);
        vm.assertEq(registry.getNode(alice).stake, MIN + 5e18, "stake");
    }

    function test_RevertWhen_AddStakeUnregistered() public {
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.NotRegistered.selector, alice));
        vm.prank(alice);
        registry.addStake(1);
    }

    function test_UnstakeFlow_DelayThenWithdraw() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
        uint256 before = token.balanceOf(alice);
        vm.prank(alice);
        registry.requestUnstake();
        vm.assertFalse(registry.getNode(alice).registered, "left topology");
        vm.assertEq(registry.nodeCount(), 0, "count");
        vm.assertEq(registry.topologyFingerprint(), bytes32(0), "fingerprint");
        vm.assertEq(registry.operatorOfIdentity(bytes32(uint256(1))), address(0), "identity freed");

        uint64 at = registry.getNode(alice).unstakeAvailableAt;
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.UnstakeDelayNotOver.selector, at, uint64(block.timestamp)));
        vm.prank(alice);
        registry.executeUnstake();

        vm.warp(at);
        vm.prank(alice);
        registry.executeUnstake();
        vm.assertEq(token.balanceOf(alice), before + MIN, "paid back");
        vm.assertEq(token.balanceOf(address(registry)), 0, "registry empty");
    }

    function test_RevertWhen_ExecuteUnstakeWithoutRequest() public {
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.NoPendingUnstake.selector, alice));
        vm.prank(alice);
        registry.executeUnstake();
    }

    function test_RevertWhen_ReregisteringWithPendingUnstake() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
        vm.prank(alice);
        registry.requestUnstake();
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.UnstakePending.selector, alice));
        _commit(alice, bytes32(uint256(1)), MIN);
    }

    // ----------------------------------------------------------------- slashing

    function test_Slash_SplitsBetweenBurnAndReporter() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN * 2);
        vm.prank(slasher);
        registry.slash(alice, 100e18, reporter);
        vm.assertEq(token.balanceOf(registry.BURN_ADDRESS()), 50e18, "burnt");
        vm.assertEq(token.balanceOf(reporter), 50e18, "reporter");
        vm.assertEq(token.balanceOf(slasher), 0, "slasher gets nothing");
        vm.assertEq(registry.getNode(alice).stake, MIN * 2 - 100e18, "stake");
        vm.assertTrue(registry.getNode(alice).registered, "still registered");
    }

    function test_Slash_BelowMinimumRemovesNode() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
        vm.prank(slasher);
        registry.slash(alice, 1, reporter);
        NoxRegistry.Node memory n = registry.getNode(alice);
        vm.assertFalse(n.registered, "removed");
        vm.assertEq(n.pendingUnstake, MIN - 1, "rest pending");
        vm.assertEq(registry.nodeCount(), 0, "count");
        vm.assertEq(registry.topologyFingerprint(), bytes32(0), "fingerprint");
    }

    function test_Slash_ReachesPendingUnstake() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
        vm.prank(alice);
        registry.requestUnstake();
        vm.prank(slasher);
        registry.slash(alice, MIN, reporter);
        vm.assertEq(registry.getNode(alice).pendingUnstake, 0, "all slashed");
        vm.warp(block.timestamp + DELAY);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.NoPendingUnstake.selector, alice));
        vm.prank(alice);
        registry.executeUnstake();
    }

    function test_RevertWhen_SlasherIsNotSlasher() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, bob, registry.SLASHER_ROLE()
            )
        );
        vm.prank(bob);
        registry.slash(alice, 1, reporter);
    }

    function test_RevertWhen_ReporterIsSlasherOrNode() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.InvalidReporter.selector, slasher));
        vm.prank(slasher);
        registry.slash(alice, 1, slasher);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.InvalidReporter.selector, alice));
        vm.prank(slasher);
        registry.slash(alice, 1, alice);
    }

    function test_RevertWhen_SlashExceedsStake() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.SlashExceedsStake.selector, MIN + 1, MIN));
        vm.prank(slasher);
        registry.slash(alice, MIN + 1, reporter);
    }

    // ----------------------------------------------------------------- admin

    function test_AdminParametersAreBounded() public {
        vm.startPrank(admin);
        vm.expectRevert(NoxRegistry.ParameterOutOfBounds.selector);
        registry.setMinStake(0);
        vm.expectRevert(NoxRegistry.ParameterOutOfBounds.selector);
        registry.setUnstakeDelay(59);
        vm.expectRevert(NoxRegistry.ParameterOutOfBounds.selector);
        registry.setUnstakeDelay(91 days);
        vm.expectRevert(NoxRegistry.ParameterOutOfBounds.selector);
        registry.setSlashBurnBps(10_001);
        vm.expectEmit(false, false, false, true);
        emit NoxRegistry.MinStakeChanged(MIN, 5);
        registry.setMinStake(5);
        registry.setUnstakeDelay(60);
        registry.setSlashBurnBps(10_000);
        vm.stopPrank();
        vm.assertEq(registry.minStake(), 5, "min");
        vm.assertEq(uint256(registry.unstakeDelay()), 60, "delay");
    }

    /// Off the devnet's chain a day is the shortest unstake delay, at deployment
    /// and afterwards; the devnet's chain (31337) may go down to a minute.
    function test_UnstakeDelay_ADayMinimumOffTheDevnetChain() public {
        vm.chainId(1);
        vm.expectRevert(NoxRegistry.ParameterOutOfBounds.selector);
        new NoxRegistry(token, admin, MIN, 60, BURN);
        vm.expectRevert(NoxRegistry.ParameterOutOfBounds.selector);
        new NoxRegistry(token, admin, MIN, 1 days - 1, BURN);
        NoxRegistry r = new NoxRegistry(token, admin, MIN, 1 days, BURN);
        vm.assertEq(uint256(r.minUnstakeDelay()), 1 days, "minimum");
        vm.startPrank(admin);
        vm.expectRevert(NoxRegistry.ParameterOutOfBounds.selector);
        r.setUnstakeDelay(60);
        // The registry deployed on the devnet's chain refuses a short delay once off it.
        vm.expectRevert(NoxRegistry.ParameterOutOfBounds.selector);
        registry.setUnstakeDelay(60);
        r.setUnstakeDelay(2 days);
        vm.stopPrank();
        vm.assertEq(uint256(r.unstakeDelay()), 2 days, "delay");

        vm.chainId(registry.DEVNET_CHAIN_ID());
        vm.assertEq(uint256(registry.minUnstakeDelay()), 60, "devnet minimum");
        new NoxRegistry(token, admin, MIN, 60, BURN);
    }

    function test_RevertWhen_NonAdminSetsParameters() public {
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, bytes32(0))
        );
        vm.prank(alice);
        registry.setMinStake(1);
    }

    function test_Paging() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
        _register(bob, bytes32(uint256(2)), NoxRegistry.Role.Exit, MIN);
        (address[] memory ops, NoxRegistry.Node[] memory nodes) = registry.nodesPage(0, 10);
        vm.assertEq(ops.length, 2, "len");
        vm.assertEq(ops[1], bob, "order");
        vm.assertEq(uint256(nodes[1].layer), 2, "exit");
        (ops,) = registry.nodesPage(1, 1);
        vm.assertEq(ops.length, 1, "page");
        vm.assertEq(ops[0], bob, "page item");
        (ops,) = registry.nodesPage(5, 3);
        vm.assertEq(ops.length, 0, "past the end");
    }

    // ----------------------------------------------------------------- fuzz

    function testFuzz_StakeAccounting(uint256 stake, uint256 extra, uint256 cut) public {
        stake = bound(stake, MIN, 100_000e18);
        extra = bound(extra, 1, 100_000e18);
        _register(alice, bytes32(uint256(7)), NoxRegistry.Role.Relay, stake);
        vm.prank(alice);
        registry.addStake(extra);
        cut = bound(cut, 1, stake + extra);
        vm.prank(slasher);
        registry.slash(alice, cut, reporter);
        NoxRegistry.Node memory n = registry.getNode(alice);
        vm.assertEq(n.stake + n.pendingUnstake, stake + extra - cut, "remaining");
        vm.assertEq(token.balanceOf(address(registry)), n.stake + n.pendingUnstake, "held");
        uint256 burnt = cut * BURN / 10_000;
        vm.assertEq(token.balanceOf(registry.BURN_ADDRESS()), burnt, "burnt");
        vm.assertEq(token.balanceOf(reporter), cut - burnt, "reward");
        vm.assertEq(n.registered, stake + extra - cut >= MIN, "removed iff below minimum");
    }
}
