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

    function _register(address who, bytes32 key, NoxRegistry.Role role, uint256 amount) internal {
        vm.prank(who);
        registry.register(key, "/ip4/127.0.0.1/tcp/9000", role, amount);
    }

    // ----------------------------------------------------------------- register

    function test_Register_RecordsNodeAndPullsStake() public {
        vm.expectEmit(true, true, false, true);
        emit NoxRegistry.NodeRegistered(
            alice,
            bytes32(uint256(1)),
            NoxRegistry.Role.Relay,
            registry.relayLayer(alice),
            MIN,
            "/ip4/127.0.0.1/tcp/9000"
        );
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
        NoxRegistry.Node memory n = registry.getNode(alice);
        vm.assertTrue(n.registered, "registered");
        vm.assertEq(n.stake, MIN, "stake");
        vm.assertEq(uint256(n.layer), uint256(registry.relayLayer(alice)), "layer");
        vm.assertEq(token.balanceOf(address(registry)), MIN, "balance");
        vm.assertEq(registry.nodeCount(), 1, "count");
        vm.assertEq(registry.operatorOfIdentity(bytes32(uint256(1))), alice, "identity");
        vm.assertTrue(registry.isActive(alice), "active");
        vm.assertEq(registry.topologyFingerprint(), keccak256(abi.encodePacked(alice)), "fingerprint");
    }

    function test_Register_ExitIsLayerTwo() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Exit, MIN);
        vm.assertEq(uint256(registry.layerOf(alice)), 2, "exit layer");
        vm.assertEq(uint256(registry.getNode(alice).layer), 2, "stored layer");
    }

    function test_RelayLayer_MatchesSha256Formula() public view {
        for (uint160 i = 1; i < 50; ++i) {
            address a = address(i * 0x1234567);
            uint256 expected = uint256(sha256(abi.encodePacked(a))) % 2;
            vm.assertEq(uint256(registry.relayLayer(a)), expected, "layer formula");
        }
    }

    function test_RevertWhen_StakeBelowMinimum() public {
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.InsufficientStake.selector, MIN - 1, MIN));
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN - 1);
    }

    function test_RevertWhen_RegisteringTwice() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.AlreadyRegistered.selector, alice));
        _register(alice, bytes32(uint256(2)), NoxRegistry.Role.Relay, MIN);
    }

    function test_RevertWhen_IdentityKeyTaken() public {
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
        vm.expectRevert(abi.encodeWithSelector(NoxRegistry.IdentityKeyTaken.selector, bytes32(uint256(1)), alice));
        _register(bob, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
    }

    function test_RevertWhen_IdentityKeyZero() public {
        vm.expectRevert(NoxRegistry.ZeroIdentityKey.selector);
        _register(alice, bytes32(0), NoxRegistry.Role.Relay, MIN);
    }

    function test_RevertWhen_MultiaddrEmptyOrTooLong() public {
        vm.expectRevert(NoxRegistry.InvalidMultiaddr.selector);
        vm.prank(alice);
        registry.register(bytes32(uint256(1)), "", NoxRegistry.Role.Relay, MIN);
        bytes memory long = new bytes(257);
        vm.expectRevert(NoxRegistry.InvalidMultiaddr.selector);
        vm.prank(alice);
        registry.register(bytes32(uint256(1)), string(long), NoxRegistry.Role.Relay, MIN);
    }

    function test_RevertWhen_RegisteringWhilePaused() public {
        vm.prank(admin);
        registry.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
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
        _register(alice, bytes32(uint256(1)), NoxRegistry.Role.Relay, MIN);
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
