// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {NoxTest} from "./utils/NoxTest.sol";
import {NoxRegistry} from "../src/NoxRegistry.sol";
import {NoxTestToken} from "../src/NoxTestToken.sol";

/// @notice Drives the registry with random operator, slasher and clock actions,
///         keeping the inputs in range so that most calls do something.
contract RegistryHandler is NoxTest {
    NoxRegistry public immutable registry;
    NoxTestToken public immutable token;
    address public immutable slasher;
    address public constant REPORTER = address(0xBEEF);
    address[] public actors;

    uint256 public ghostBurnt;
    uint256 public ghostRewards;
    uint256 public calls;

    constructor(NoxRegistry registry_, NoxTestToken token_, address slasher_) {
        registry = registry_;
        token = token_;
        slasher = slasher_;
        for (uint256 i = 1; i <= 6; ++i) {
            // casting to 'uint160' is safe because the value is below 2^16
            // forge-lint: disable-next-line(unsafe-typecast)
            address a = address(uint160(0x1000 + i * 7919));
            actors.push(a);
            vm.prank(a);
            token.approve(address(registry_), type(uint256).max);
        }
    }

    function actorCount() external view returns (uint256) {
        return actors.length;
    }

    function _actor(uint256 seed) internal view returns (address) {
        return actors[seed % actors.length];
    }

    /// @dev Commits (stake pulled), moves one block on and reveals, unless `leavePending`:
    ///      then the commitment stays for `cancelCommitment`.
    function register(uint256 seed, bool exit, uint256 amount, uint256 keySeed, bool leavePending) external {
        address a = _actor(seed);
        NoxRegistry.Node memory n = registry.getNode(a);
        if (n.registered || n.pendingUnstake != 0) return;
        (bytes32 pending,,) = registry.commitments(a);
        if (pending != bytes32(0)) return;
        amount = bound(amount, registry.minStake(), 50_000e18);
        bytes32 key = keccak256(abi.encode(a, keySeed));
        (address claimant,) = registry.identityClaims(key);
        if (claimant != address(0) && claimant != a) return;
        bytes32 commitment = registry.commitmentOf(key, a, bytes32(keySeed));
        vm.prank(a);
        registry.commit(commitment, amount);
        calls++;
        if (leavePending) return;
        vm.roll(block.number + 1);
        vm.prank(a);
        registry.register(
            key, "/ip4/127.0.0.1/tcp/1", exit ? NoxRegistry.Role.Exit : NoxRegistry.Role.Relay, bytes32(keySeed)
        );
    }

    function cancelCommitment(uint256 seed) external {
        address a = _actor(seed);
        (bytes32 pending,,) = registry.commitments(a);
        if (pending == bytes32(0)) return;
        vm.prank(a);
        registry.cancelCommitment();
        calls++;
    }

    function addStake(uint256 seed, uint256 amount) external {
        address a = _actor(seed);
        if (!registry.getNode(a).registered) return;
        amount = bound(amount, 1, 10_000e18);
        vm.prank(a);
        registry.addStake(amount);
        calls++;
    }

    function requestUnstake(uint256 seed) external {
        address a = _actor(seed);
        if (!registry.getNode(a).registered) return;
        vm.prank(a);
        registry.requestUnstake();
        calls++;
    }

    function executeUnstake(uint256 seed, uint256 wait) external {
        address a = _actor(seed);
        NoxRegistry.Node memory n = registry.getNode(a);
        if (n.pendingUnstake == 0) return;
        vm.warp(block.timestamp + bound(wait, 0, 10 days));
        // The handler moves the clock itself; the comparison mirrors the registry's.
        // forge-lint: disable-next-line(block-timestamp)
        if (block.timestamp < n.unstakeAvailableAt) return;
        vm.prank(a);
        registry.executeUnstake();
        calls++;
    }

    function slash(uint256 seed, uint256 amount) external {
        address a = _actor(seed);
        NoxRegistry.Node memory n = registry.getNode(a);
        uint256 available = n.stake + n.pendingUnstake;
        if (available == 0) return;
        amount = bound(amount, 1, available);
        uint256 burnt = amount * registry.slashBurnBps() / registry.BPS();
        vm.prank(slasher);
        registry.slash(a, amount, REPORTER);
        ghostBurnt += burnt;
        ghostRewards += amount - burnt;
        calls++;
    }
}

contract NoxRegistryInvariantTest is NoxTest {
    NoxRegistry registry;
    NoxTestToken token;
    RegistryHandler handler;
    address slasher = address(0x51A5);

    function setUp() public {
        token = new NoxTestToken(0);
        registry = new NoxRegistry(token, address(this), 1000e18, 3 days, 3000);
        registry.grantRole(registry.SLASHER_ROLE(), slasher);
        handler = new RegistryHandler(registry, token, slasher);
        for (uint256 i = 0; i < handler.actorCount(); ++i) {
            token.mint(handler.actors(i), MINTED_PER_ACTOR);
        }
    }

    uint256 constant MINTED_PER_ACTOR = 1_000_000e18;

    /// @dev Forge fuzzes only the handler.
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    function invariant_BalanceEqualsStakesPlusPending() public view {
        uint256 sum;
        for (uint256 i = 0; i < handler.actorCount(); ++i) {
            NoxRegistry.Node memory n = registry.getNode(handler.actors(i));
            (, uint256 committed,) = registry.commitments(handler.actors(i));
            sum += n.stake + n.pendingUnstake + committed;
        }
        vm.assertEq(token.balanceOf(address(registry)), sum, "registry balance != stakes + pending + committed");
    }

    function invariant_FingerprintIsXorOfRegisteredSet() public view {
        bytes32 x;
        uint256 count;
        for (uint256 i = 0; i < handler.actorCount(); ++i) {
            address a = handler.actors(i);
            if (registry.getNode(a).registered) {
                x ^= keccak256(abi.encodePacked(a));
                count++;
            }
        }
        vm.assertEq(registry.topologyFingerprint(), x, "fingerprint");
        vm.assertEq(registry.nodeCount(), count, "node count");
        (address[] memory ops,) = registry.nodesPage(0, 100);
        vm.assertEq(ops.length, count, "page length");
    }

    function invariant_SlashedFundsLeaveToBurnAndReporterOnly() public view {
        vm.assertEq(token.balanceOf(registry.BURN_ADDRESS()), handler.ghostBurnt(), "burnt");
        vm.assertEq(token.balanceOf(handler.REPORTER()), handler.ghostRewards(), "rewards");
        vm.assertEq(token.balanceOf(slasher), 0, "slasher kept funds");
    }

    function invariant_TokensAreConserved() public view {
        uint256 total = token.balanceOf(address(registry)) + token.balanceOf(registry.BURN_ADDRESS())
            + token.balanceOf(handler.REPORTER());
        for (uint256 i = 0; i < handler.actorCount(); ++i) {
            total += token.balanceOf(handler.actors(i));
        }
        vm.assertEq(total, MINTED_PER_ACTOR * handler.actorCount(), "tokens created or lost");
    }

    function invariant_ActiveNodesMeetTheMinimum() public view {
        for (uint256 i = 0; i < handler.actorCount(); ++i) {
            NoxRegistry.Node memory n = registry.getNode(handler.actors(i));
            if (n.registered) vm.assertLe(registry.minStake(), n.stake, "registered below minimum");
            else vm.assertEq(n.stake, 0, "stake outside the topology");
        }
    }
}

contract RegistryHandlerSmokeTest is NoxTest {
    function test_HandlerChangesState() public {
        NoxTestToken token = new NoxTestToken(0);
        NoxRegistry registry = new NoxRegistry(token, address(this), 1000e18, 3 days, 3000);
        registry.grantRole(registry.SLASHER_ROLE(), address(0x51A5));
        RegistryHandler handler = new RegistryHandler(registry, token, address(0x51A5));
        for (uint256 i = 0; i < handler.actorCount(); ++i) {
            token.mint(handler.actors(i), 1_000_000e18);
        }
        handler.register(0, false, 0, 1, false);
        vm.assertEq(registry.nodeCount(), 1, "registered");
        handler.addStake(0, 5);
        handler.requestUnstake(0);
        handler.slash(0, 10e18);
        handler.executeUnstake(0, 10 days);
        handler.register(1, false, 0, 2, true);
        vm.assertEq(registry.nodeCount(), 0, "only committed");
        handler.cancelCommitment(1);
        handler.executeUnstake(1, 10 days);
        vm.assertEq(handler.calls(), 8, "every call acted");
        vm.assertEq(token.balanceOf(address(registry)), 0, "registry emptied");
    }
}
